"""`codeeraser erase` on the tiny demo: the planted secrets are forgotten, nothing is lost."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from audit.calibrate import DEFAULT_THRESHOLDS
from audit.corpus import CorpusSpec, load_texts
from audit.extraction import MeasureConfig
from audit.findings import read_findings
from audit.measurements import Measurement, read_measurements, write_measurements
from audit.model import load_model
from audit.probes import build_probes
from gate.cli import cli
from gate.unlearn import trainer
from gate.unlearn.erase import measure_by_id, weights_sha256
from gate.unlearn.remediation import Remediation

FAST = ["--lr", "5e-4", "--epochs", "30"]  # the tiny model forgets in about 12 epochs


def _measure(model_dir: Path, demo: Any) -> list[Measurement]:
    """Measure the planted findings on a model (copies of a file measured once)."""
    loaded = load_model(model_dir, "cpu", "float32")
    findings = read_findings(demo.planted)
    texts = load_texts(CorpusSpec(demo.corpus_dir), {f.sample_id for f in findings})
    probes = build_probes(findings, texts, loaded.tokenizer, context_length=loaded.context_length)
    measure, _ = measure_by_id(
        loaded.model, loaded.tokenizer, probes, MeasureConfig(), DEFAULT_THRESHOLDS
    )
    return measure([f.id for f in findings])


def _secrets(demo: Any) -> set[str]:
    findings = read_findings(demo.planted)
    texts = load_texts(CorpusSpec(demo.corpus_dir), {f.sample_id for f in findings})
    return {texts[f.sample_id][f.start : f.end] for f in findings}


@pytest.fixture(scope="module")
def work(tiny_demo: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with before.jsonl: the planted findings measured on the demo model."""
    root = tmp_path_factory.mktemp("erase")
    write_measurements(root / "before.jsonl", _measure(tiny_demo.model_dir, tiny_demo))
    return root


def _before(work: Path) -> list[Measurement]:
    return read_measurements(work / "before.jsonl")


def _erase(demo: Any, work: Path, out: Path, *extra: str) -> Result:
    args = [
        "erase",
        "--model", str(demo.model_dir),
        "--data", str(demo.corpus_dir),
        "--findings", str(demo.planted),
        "--measurements", str(work / "before.jsonl"),
        "--out", str(out),
    ]  # fmt: skip
    return CliRunner().invoke(cli, [*args, *extra])


@pytest.fixture(scope="module")
def erased(tiny_demo: Any, work: Path) -> tuple[Result, Path, str]:
    before = weights_sha256(tiny_demo.model_dir)
    out = work / "remediated"
    heldout = [
        "--heldout",
        str(tiny_demo.heldout_dir),
        "--heldout-findings",
        str(tiny_demo.controls),
    ]
    result = _erase(tiny_demo, work, out, *FAST, *heldout, "--humaneval", "2")
    return result, out, before


def test_erase_forgets_every_planted_secret(
    tiny_demo: Any, erased: tuple[Result, Path, str]
) -> None:
    result, out, _ = erased
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert {p.name for p in out.iterdir()} >= {
        "model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
        "remediation.json",
    }  # fmt: skip
    after = _measure(out, tiny_demo)  # measured afresh on the saved model
    assert sum(m.extracted_greedy for m in after) == 0
    assert all(m.ma < DEFAULT_THRESHOLDS.ma and m.el_10 < DEFAULT_THRESHOLDS.el_10 for m in after)
    info = Remediation.read(out)  # what the run record takes from it
    assert info.method == "codeeraser"
    assert sorted(info.forget_findings) == sorted(m.finding_id for m in after)
    assert info.stop_reason == "every finding forgotten"
    assert info.config.lr == 5e-4
    assert info.config.window_tokens == 128  # clamped to the model's context
    assert info.output_sha256 == weights_sha256(out)
    assert info.output_path == str(out)
    assert info.peak_memory_bytes > 0
    assert info.samples.forgotten == len(after)
    assert info.kl_reference.kind == "cached-full"
    assert info.history[-1].remaining == 0
    assert info.utility.perplexity_before is not None
    assert info.utility.perplexity_before.tokens > 0
    assert info.utility.humaneval_after is not None
    assert info.utility.humaneval_after.problems == 2
    assert json.loads((out / "remediation.json").read_text())["config"]["max_epochs"] > 0
    assert "forgotten" in result.stderr


def test_the_input_model_is_not_touched(tiny_demo: Any, erased: tuple[Result, Path, str]) -> None:
    _, out, before = erased
    assert weights_sha256(tiny_demo.model_dir) == before
    record = json.loads((out / "remediation.json").read_text())
    assert record["input_sha256"] == before
    assert record["output_sha256"] != before
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name]


def test_no_secret_is_written_or_printed(tiny_demo: Any, erased: tuple[Result, Path, str]) -> None:
    result, out, _ = erased
    record = (out / "remediation.json").read_text()
    for secret in _secrets(tiny_demo):
        assert secret not in record
        assert secret not in result.output


def test_an_existing_output_is_refused_unless_forced(tiny_demo: Any, work: Path) -> None:
    out = work / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    refused = _erase(tiny_demo, work, out)
    assert refused.exit_code == 2
    assert "already exists" in refused.output
    assert (out / "keep.txt").read_text() == "mine"
    inside = _erase(tiny_demo, work, tiny_demo.model_dir / "out")
    assert inside.exit_code == 2
    assert "is inside --model" in inside.output


def _interrupt_in_epoch_1(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    real = trainer.Unlearner._remeasure

    def remeasure(self: trainer.Unlearner, epoch: int) -> tuple[list[str], list[Measurement]]:
        if epoch == 1:
            if how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            raise KeyboardInterrupt
        return real(self, epoch)

    monkeypatch.setattr(trainer.Unlearner, "_remeasure", remeasure)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_interrupted_run_leaves_no_output(
    tiny_demo: Any, work: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    _interrupt_in_epoch_1(monkeypatch, how)
    before = weights_sha256(tiny_demo.model_dir)
    out = work / f"interrupted-{how}"
    result = _erase(tiny_demo, work, out, *FAST, "--force")
    assert result.exit_code == 3
    assert "interrupted" in result.output
    assert "nothing was written" in result.output
    assert not out.exists()
    assert not [p for p in work.iterdir() if p.name.startswith(f".{out.name}")]
    assert weights_sha256(tiny_demo.model_dir) == before
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back


def test_nothing_to_erase_writes_nothing(tiny_demo: Any, work: Path) -> None:
    clean = [
        Measurement(**{**m.to_dict(), "memorized": False, "extracted_greedy": False})
        for m in _before(work)[:3]
    ]
    write_measurements(work / "clean.jsonl", clean)
    args = ["--measurements", str(work / "clean.jsonl")]
    result = CliRunner().invoke(
        cli,
        [
            "erase", "--model", str(tiny_demo.model_dir), "--data", str(tiny_demo.corpus_dir),
            "--findings", str(tiny_demo.planted), *args, "--out", str(work / "none"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Nothing to erase" in result.output
    assert not (work / "none").exists()


def test_measurements_of_unknown_findings_are_input_errors(tiny_demo: Any, work: Path) -> None:
    stray = _before(work)[0]
    write_measurements(
        work / "stray.jsonl", [Measurement(**{**stray.to_dict(), "finding_id": "f" * 16})]
    )
    result = CliRunner().invoke(
        cli,
        [
            "erase", "--model", str(tiny_demo.model_dir), "--data", str(tiny_demo.corpus_dir),
            "--findings", str(tiny_demo.planted), "--measurements", str(work / "stray.jsonl"),
            "--out", str(work / "stray-out"),
        ],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "no such finding" in result.output


def test_the_method_choices_are_the_registered_methods() -> None:
    from gate.unlearn.methods import METHODS
    from gate.unlearn.settings import METHOD_NAMES

    assert set(METHOD_NAMES) == set(METHODS)


def test_lr_auto_records_the_probe_and_the_rate_it_chose(tiny_demo: Any, work: Path) -> None:
    out = work / "auto"
    result = _erase(tiny_demo, work, out, "--lr", "auto", "--epochs", "3")
    assert result.exit_code == 0, result.output
    info = Remediation.read(out)
    probe = info.lr_probe
    assert probe is not None
    assert probe.trials[0].lr == pytest.approx(1e-4)  # the search starts at 1e-4
    assert info.config.lr == probe.chosen  # the record holds the rate, not "auto"
    within = [t.lr for t in probe.trials if t.retain_kl is not None and t.retain_kl <= 0.005]
    assert probe.chosen == (max(within) if within else pytest.approx(1e-6))
    assert info.epochs <= 3
