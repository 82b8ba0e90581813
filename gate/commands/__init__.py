"""One module per CLI command; registered by name in gate.cli.COMMANDS."""
