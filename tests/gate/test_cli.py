from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from gate import __version__
from gate.cli import COMMANDS, cli, short_help


def test_version_and_help() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "Exit codes" in result.output
    for name in COMMANDS:
        assert name in result.output


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for name in COMMANDS:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage:" in result.output


def test_unknown_command_is_usage_error() -> None:
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command" in result.output


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from gate.cli import main; sys.argv=['codeeraser','--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\nassert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


FAKE_SECRET = "AKIA" + "QX7RW2ZK5N3M8PLT"  # looks like an AWS key id; never printed


def _scan_raising(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, error: BaseException, *flags: str
) -> Result:
    def broken(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr("gate.commands.scan.scan_corpus", broken)  # as the command sees it
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.py").write_text("x = 1\n")
    args = [*flags, "scan", str(tmp_path / "data"), "--out", str(tmp_path / "f.jsonl")]
    return CliRunner().invoke(cli, args)


def test_an_unexpected_error_is_one_line_exit_3_without_its_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result = _scan_raising(monkeypatch, tmp_path, ValueError(f"bad value {FAKE_SECRET}"))
    assert result.exit_code == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: internal error (ValueError at gate/commands/scan.py:")
    assert "rerun with -vv" in lines[0]
    assert FAKE_SECRET not in result.output


def test_vv_logs_the_traceback_frames_but_no_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    try:
        raise KeyError(FAKE_SECRET)
    except KeyError as cause:
        error = ValueError(f"while reading {FAKE_SECRET}")
        error.__cause__ = cause
    result = _scan_raising(monkeypatch, tmp_path, error, "-vv")
    assert result.exit_code == 3
    assert "Traceback (most recent call last)" in result.stderr
    assert "KeyError (message withheld)" in result.stderr
    assert "ValueError (message withheld)" in result.stderr
    assert "test_cli.py" in result.stderr  # the frames are there
    assert FAKE_SECRET not in result.output


def test_codeeraser_debug_lets_the_exception_through(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CODEERASER_DEBUG", "1")
    result = _scan_raising(monkeypatch, tmp_path, ValueError("for a developer"))
    assert isinstance(result.exception, ValueError)


def test_an_interrupt_is_exit_3_not_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Click's own handling would print "Aborted!" and exit 1, which means "policy fails"."""
    result = _scan_raising(monkeypatch, tmp_path, KeyboardInterrupt())
    assert result.exit_code == 3
    assert result.stderr.strip().splitlines() == [
        "Error: interrupted; no output was left half-written (each file appears only when "
        "complete): rerun the command"
    ]
    assert not (tmp_path / "f.jsonl").exists()


@pytest.mark.parametrize("limit", [30, 45, 80])
def test_the_command_list_reads_each_short_help_as_click_makes_it(limit: int) -> None:
    for name, target in COMMANDS.items():
        command = cli.get_command(click.Context(cli), name)
        assert command is not None
        assert short_help(target, limit) == command.get_short_help_str(limit), name
    listing = CliRunner().invoke(cli, ["--help"]).output
    assert all(f"  {name} " in listing for name in COMMANDS)


def test_a_launched_run_leaves_its_process_group_before_exiting(tmp_path: Path) -> None:
    import torch.distributed as dist
    from torch._C._distributed_c10d import FileStore

    from gate.cli import close_process_group

    store = FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    assert dist.is_initialized()
    close_process_group()
    assert not dist.is_initialized()
    close_process_group()  # nothing to leave: no error
