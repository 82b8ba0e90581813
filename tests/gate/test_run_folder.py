"""The run folder's bookkeeping: reuse with --resume, refusal of other inputs, stale outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.errors import InputError
from gate.policy import Policy
from gate.run_folder import (
    MARKER,
    RUN_STATE,
    RunFolder,
    RunInputs,
    ScanCounts,
)


@pytest.fixture
def inputs(tmp_path: Path) -> RunInputs:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "data.jsonl").write_text('{"content": "x"}\n')
    return RunInputs.of(
        tmp_path / "model", tmp_path / "data.jsonl", Policy(), device="cpu", dtype="auto",
        batch_tokens=64,
    )  # fmt: skip


def _open(tmp_path: Path, inputs: RunInputs, *, resume: bool) -> RunFolder:
    return RunFolder.open(tmp_path / "out", tmp_path / "model", inputs, resume=resume, force=False)


def test_a_resumed_run_of_the_same_inputs_reuses_the_stage_outputs(
    tmp_path: Path, inputs: RunInputs
) -> None:
    first = _open(tmp_path, inputs, resume=False)
    assert not first.reuse
    assert (tmp_path / "out" / MARKER).exists()
    (tmp_path / "out" / "findings.jsonl").write_text("")
    first.scan_done(ScanCounts(samples=3, chars=30))
    again = _open(tmp_path, inputs, resume=True)
    assert again.reuse
    assert again.reusable("findings.jsonl")
    assert not again.reusable("findings.jsonl", "thresholds.json")
    assert again.stages().scan == ScanCounts(samples=3, chars=30)


def test_without_resume_the_earlier_outputs_go(tmp_path: Path, inputs: RunInputs) -> None:
    _open(tmp_path, inputs, resume=False).scan_done(ScanCounts(samples=1, chars=1))
    for name in ("findings.jsonl", "measurements.after-prefix-64.jsonl", "record.json"):
        (tmp_path / "out" / name).write_text("")
    (tmp_path / "out" / "remediated-model").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    fresh = _open(tmp_path, inputs, resume=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MARKER, RUN_STATE, "notes.txt"]
    assert fresh.stages().scan is None
    assert not fresh.reusable("findings.jsonl")


def test_a_resume_with_other_inputs_is_refused_naming_them(
    tmp_path: Path, inputs: RunInputs
) -> None:
    _open(tmp_path, inputs, resume=False)
    other = inputs.model_copy(update={"dtype": "float32", "batch_tokens": 128})
    with pytest.raises(InputError, match="other batch_tokens, dtype; rerun without --resume"):
        _open(tmp_path, other, resume=True)


def test_an_unreadable_run_state_is_nothing_to_reuse(tmp_path: Path, inputs: RunInputs) -> None:
    _open(tmp_path, inputs, resume=False)
    (tmp_path / "out" / "findings.jsonl").write_text("")
    (tmp_path / "out" / RUN_STATE).write_text('{"inputs": {"tool": "0.0.1"}}')
    resumed = _open(tmp_path, inputs, resume=True)
    assert not resumed.reuse
    assert not (tmp_path / "out" / "findings.jsonl").exists()


def test_a_folder_of_something_else_is_refused(tmp_path: Path, inputs: RunInputs) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("")
    with pytest.raises(InputError, match="not a gate run folder"):
        _open(tmp_path, inputs, resume=False)
    with pytest.raises(InputError, match="outside the model folder"):
        RunFolder.open(tmp_path / "model" / "out", tmp_path / "model", inputs, resume=False,
                       force=True)  # fmt: skip
