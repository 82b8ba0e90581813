"""GitHub Actions integration: step summary and step outputs.

When the gate runs inside GitHub Actions (`GITHUB_ACTIONS=true`), it appends the
markdown summary to `$GITHUB_STEP_SUMMARY` and writes the step outputs that the
composite action (`.github/actions/codeeraser-gate/action.yml`) passes on:

- `verdict`: `passed` (the original or the remediated model meets the policy),
  `failed`, or `error`;
- `model-path`: the model to release (empty when none may be);
- `report`: the path of report.html;
- `remediated`: `true` when the model to release is the remediated one.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from gate.record import RunRecord

OUTPUT_NAMES: tuple[str, ...] = ("verdict", "model-path", "report", "remediated")


def in_github_actions(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get("GITHUB_ACTIONS", "").lower() == "true"


def verdict_word(outcome: str) -> str:
    """The `verdict` output for a record outcome."""
    return {"passed": "passed", "remediated": "passed", "failed": "failed"}.get(outcome, "error")


def outputs_for(record: RunRecord, report_path: Path | None) -> dict[str, str]:
    return {
        "verdict": verdict_word(record.outcome),
        "model-path": record.released_model or "",
        "report": str(report_path) if report_path is not None else "",
        "remediated": "true" if record.outcome == "remediated" else "false",
    }


def publish(
    record: RunRecord,
    summary_markdown: str | None,
    report_path: Path | None,
    env: Mapping[str, str] | None = None,
) -> bool:
    """Write the step summary and outputs when running in GitHub Actions.

    Returns False (and writes nothing) outside GitHub Actions. A missing
    `$GITHUB_STEP_SUMMARY` or `$GITHUB_OUTPUT` is skipped, not an error.
    """
    env = os.environ if env is None else env
    if not in_github_actions(env):
        return False
    summary_file = env.get("GITHUB_STEP_SUMMARY")
    if summary_file and summary_markdown:
        _append(Path(summary_file), summary_markdown.rstrip("\n") + "\n")
    output_file = env.get("GITHUB_OUTPUT")
    if output_file:
        values = outputs_for(record, report_path)
        _append(Path(output_file), "".join(format_output(k, v) for k, v in values.items()))
    return True


def format_output(name: str, value: str) -> str:
    """One `$GITHUB_OUTPUT` entry; multi-line values use a random heredoc delimiter."""
    if "\n" not in value and "\r" not in value:
        return f"{name}={value}\n"
    delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
    return f"{name}<<{delimiter}\n{value}\n{delimiter}\n"


def _append(path: Path, text: str) -> None:
    """Append (the runner owns these files and may hold earlier steps' content)."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
