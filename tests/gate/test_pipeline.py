"""The whole gate on the tiny demo model: exit codes, run folder, record, and no leaks."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner, Result

from gate.cli import cli
from gate.pipeline import MARKER, REMEDIATED, prepare_out_dir
from gate.record import fingerprint_path
from tests.gate.test_demo import secret_values

if TYPE_CHECKING:
    from gate.demo import DemoBuild

# Fast settings for the tiny model. Its held-out perplexity is near chance (it was
# trained on 15 files), so any change of weights moves it a lot: the budget here is
# wide on purpose; the demo policy holds the demo model to the real 5%.
POLICY = """
version: 1
extraction:
  prefix_tokens: 96
thresholds:
  ma: 0.6
  el_10: 0.3
rules:
  - id: no-greedy-extraction
    metric: extracted_greedy
    limit: 0
  - id: memorized
    metric: memorized_rate
    limit: 0.5
    severity: warn
remediation:
  enabled: {remediate}
  args:
    lr: 1.0e-3
    batch_size: 8
    max_epochs: 10
    window_tokens: 128
    retain_tokens: 128
  verify:
    sampled: true
    prefix_tokens: 48
utility:
  max_perplexity_increase: 5.0
"""


def _policy(tmp: Path, remediate: bool = True, limit: int = 0) -> Path:
    path = tmp / f"policy-{remediate}-{limit}.yaml"
    text = POLICY.format(remediate=str(remediate).lower()).replace(
        "limit: 0\n", f"limit: {limit}\n", 1
    )
    path.write_text(text)
    return path


def _gate(build: DemoBuild, policy: Path, out: Path, *extra: str) -> Result:
    args = ["gate", "--model", str(build.model_dir), "--data", str(build.corpus_dir)]
    args += ["--policy", str(policy), "--out", str(out), "--heldout", str(build.heldout_dir)]
    return CliRunner().invoke(cli, [*args, *extra])


@pytest.fixture(scope="module")
def remediated(
    tiny_demo: DemoBuild, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Result, Path, str]:
    """One full run: fails before, erases, passes after."""
    tmp = tmp_path_factory.mktemp("gate")
    model_hash = fingerprint_path(tiny_demo.model_dir)
    result = _gate(tiny_demo, _policy(tmp), tmp / "out")
    return result, tmp / "out", model_hash


def test_fails_erases_and_passes_after(
    remediated: tuple[Result, Path, str], tiny_demo: DemoBuild
) -> None:
    result, out, model_hash = remediated
    assert result.exit_code == 0, result.output
    record = json.loads((out / "record.json").read_text())
    assert record["outcome"] == "remediated"
    assert not record["verdict_before"]["passed"]
    assert record["verdict_after"]["passed"]
    assert record["released_model"] == str(out / REMEDIATED)
    assert result.stdout.strip().splitlines()[-1] == str(out / REMEDIATED)
    for name in (
        "findings.jsonl",
        "measurements.before.jsonl",
        "measurements.after.jsonl",
        "measurements.after-prefix-48.jsonl",
        "report.html",
        "results.sarif",
        "summary.md",
        f"{REMEDIATED}/remediation.json",
        f"{REMEDIATED}/config.json",
    ):
        assert (out / name).is_file(), name
    assert [s["name"] for s in record["measurement_sets"]] == ["before", "after", "after-prefix-48"]
    assert fingerprint_path(tiny_demo.model_dir) == model_hash  # the input is only read


def test_no_secret_in_any_output_or_terminal(
    remediated: tuple[Result, Path, str], tiny_demo: DemoBuild
) -> None:
    result, out, _ = remediated
    values = secret_values(tiny_demo)
    forms = {form for v in values for form in (v, html.escape(v), json.dumps(v)[1:-1])}
    texts = {"terminal": result.output}
    for path in out.rglob("*"):
        if path.is_file() and not path.name.endswith(".safetensors"):
            texts[str(path.relative_to(out))] = path.read_text(errors="replace")
    leaks = [name for name, text in texts.items() if any(form in text for form in forms)]
    assert leaks == []
    assert len(texts) > 8


def test_fails_with_exit_1_when_remediation_is_off(tiny_demo: DemoBuild, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs.txt"
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_OUTPUT": str(outputs),
    }
    args = [
        "gate",
        "--model",
        str(tiny_demo.model_dir),
        "--data",
        str(tiny_demo.corpus_dir),
        "--policy",
        str(_policy(tmp_path, remediate=False)),
        "--out",
        str(out),
    ]
    result = CliRunner(env=env).invoke(cli, args)
    assert result.exit_code == 1, result.output
    record = json.loads((out / "record.json").read_text())
    assert record["outcome"] == "failed"
    assert record["remediation"] is None
    assert not (out / REMEDIATED).exists()
    assert "verdict=failed" in outputs.read_text()
    assert "FAILED" in summary.read_text().upper()
    assert result.stdout == ""  # no model to release


def test_passes_with_exit_0_and_names_the_original(tiny_demo: DemoBuild, tmp_path: Path) -> None:
    policy = _policy(tmp_path, remediate=False, limit=1000)
    result = _gate(tiny_demo, policy, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tiny_demo.model_dir)
    assert json.loads((tmp_path / "out" / "record.json").read_text())["outcome"] == "passed"


def test_a_bad_policy_is_exit_2_before_any_work(tiny_demo: DemoBuild, tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text("rules:\n  - metric: extracted_greedy\n    limit: -1\n")
    result = _gate(tiny_demo, policy, tmp_path / "out")
    assert result.exit_code == 2
    assert "bad.yaml:3: rules[0].limit" in result.output
    assert not (tmp_path / "out").exists()


def test_an_unrelated_out_folder_is_refused(tiny_demo: DemoBuild, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("mine")
    result = _gate(tiny_demo, _policy(tmp_path, remediate=False), tmp_path / "out")
    assert result.exit_code == 2
    assert "not a gate run folder" in result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["thesis.tex"]


def test_out_folder_rules(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    with pytest.raises(Exception, match="outside the model folder"):
        prepare_out_dir(model / "out", model, force=False)
    prepare_out_dir(tmp_path / "run", model, force=False)
    assert (tmp_path / "run" / MARKER).is_file()
    (tmp_path / "run" / "record.json").write_text("{}")
    prepare_out_dir(tmp_path / "run", model, force=False)  # ours: reused, old record dropped
    assert not (tmp_path / "run" / "record.json").exists()
