"""The whole gate on the tiny demo model: exit codes, run folder, record, and no leaks."""

from __future__ import annotations

import html
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner, Result

from gate.cli import cli
from gate.record import fingerprint_path
from gate.run_folder import MARKER, REMEDIATED, prepare_out_dir
from gate.unlearn.checkpoint import work_dir
from tests.gate.demo.test_build import secret_values

if TYPE_CHECKING:
    from gate.demo.build import DemoBuild

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


def _gate_args(build: DemoBuild, policy: Path, out: Path, *extra: str) -> list[str]:
    args = ["gate", "--model", str(build.model_dir), "--data", str(build.corpus_dir)]
    args += ["--policy", str(policy), "--out", str(out), "--heldout", str(build.heldout_dir)]
    return [*args, *extra]


def _gate(build: DemoBuild, policy: Path, out: Path, *extra: str) -> Result:
    return CliRunner().invoke(cli, _gate_args(build, policy, out, *extra))


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
    rates = [line for line in result.output.splitlines() if "memorized " in line and "warn" in line]
    assert len(rates) == 1
    assert rates[0].count("%") == 3, rates  # limit, before and after in percent


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


def test_the_record_and_reports_show_both_sanity_probes(
    remediated: tuple[Result, Path, str],
) -> None:
    """The original and the remediated model were probed on their training code; the
    figures are in record.json, the HTML and the summary, and the remediated model's
    probe is a rule of its verdict."""
    _, out, _ = remediated
    record = json.loads((out / "record.json").read_text())
    for role in ("original", "remediated"):
        probe = record["sanity"][role]
        assert probe["passed"]
        assert probe["loss"] < 0.75 * probe["uniform"]
        assert probe["samples"] >= 1
    assert probe["vocabulary"] == 512
    rules = {r["rule"]: r for r in record["verdict_after"]["results"]}
    assert rules["sanity-probe"]["passed"]
    assert 'id="sanity-original"' in (out / "report.html").read_text()
    assert "Sanity probe (remediated): passed" in (out / "summary.md").read_text()


def test_a_remediated_model_that_fails_its_probe_fails_the_verdict() -> None:
    from gate.pipeline import with_sanity
    from gate.verdict import SanityInfo, Verdict

    passing = Verdict(results=(), findings=0, measured=0)
    broken = SanityInfo(
        loss=6.3, uniform=6.24, vocabulary=512, samples=8, tokens=700, max_ratio=0.75,
        ratio=1.01, passed=False,
    )  # fmt: skip
    verdict = with_sanity(passing, broken)
    assert not verdict.passed
    assert "the erasure damaged the model" in verdict.results[-1].note
    assert not with_sanity(passing, None).passed  # not probed: not passed


def test_a_bug_mid_run_leaves_an_error_record_and_no_earlier_pass(
    tiny_demo: DemoBuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that passed, then a run in the same folder that stops on a bug while
    measuring: exit 3, record.json names the error and the stages that finished, and
    every report says ERROR; the earlier PASSED is gone."""
    from gate import pipeline

    policy, out = _policy(tmp_path, remediate=False, limit=1000), tmp_path / "out"
    assert _gate(tiny_demo, policy, out).exit_code == 0
    assert "PASSED" in (out / "report.html").read_text()

    def bug(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(pipeline, "_measure", bug)
    result = _gate(tiny_demo, policy, out)
    assert result.exit_code == 3
    assert "internal error (RuntimeError" in result.output
    record = json.loads((out / "record.json").read_text())
    assert (record["outcome"], record["exit_code"]) == ("error", 3)
    assert record["error"] == "internal error (RuntimeError)"
    assert record["finished_stages"] == ["scan"]
    assert record["sanity"]["original"]["passed"]  # the probe ran before the bug
    for name in ("report.html", "summary.md"):
        text = (out / name).read_text()
        assert "ERROR" in text
        assert "PASSED" not in text


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


# ---------------------------------------------------------------- --resume

ROOT = Path(__file__).resolve().parents[2]
VOLATILE = {
    "started_at", "finished_at", "timings", "invocation", "wall_seconds", "unlearn_seconds",
    "peak_memory_bytes", "seconds", "erase_seconds", "measure_seconds",
}  # fmt: skip
STAGE_FILES = (
    "findings.jsonl",
    "measurements.before.jsonl",
    "measurements.after.jsonl",
    "measurements.after-prefix-48.jsonl",
)


def normalized(value: Any, out: Path) -> Any:
    """A record without what may differ between equal runs: times and the run folder."""
    if isinstance(value, dict):
        return {k: normalized(v, out) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [normalized(v, out) for v in value]
    if isinstance(value, str):
        return value.replace(str(out), "OUT")
    return value


def _stop_during_erase(args: list[str], out: Path) -> tuple[int, str]:
    """A real gate process, sent SIGTERM once its erase stage has a checkpoint."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gate", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    state = work_dir(out / REMEDIATED) / "checkpoint" / "state.json"
    deadline = time.monotonic() + 300
    while not state.exists() and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be stopped"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


def test_a_gate_stopped_in_its_erase_stage_resumes_to_the_same_record(
    tiny_demo: DemoBuild, remediated: tuple[Result, Path, str], tmp_path: Path
) -> None:
    """Stopped by SIGTERM during erase, rerun with --resume: the finished stages are
    reused, the erase continues from its checkpoint, and the record is the uninterrupted
    run's (timings and paths aside), measurement files byte for byte."""
    _, ref, _ = remediated
    policy = _policy(ref.parent)  # the file the uninterrupted run used
    out = tmp_path / "run"
    model_hash = fingerprint_path(tiny_demo.model_dir)
    status, stderr = _stop_during_erase(_gate_args(tiny_demo, policy, out), out)
    last = stderr.strip().splitlines()[-1]
    assert status == 3, stderr
    assert last.startswith("Error: interrupted"), last
    assert "rerun the same command with --resume" in last
    assert json.loads((out / "record.json").read_text())["outcome"] == "error"
    assert not (out / REMEDIATED).exists()  # no half-finished model where the result goes
    assert (out / "measurements.before.jsonl").is_file()

    resumed = CliRunner().invoke(cli, _gate_args(tiny_demo, policy, out, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert "reused" in resumed.stderr  # the scan was not run again
    for name in STAGE_FILES:  # a second process measured exactly what the first did
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    record = json.loads((out / "record.json").read_text())
    expected = json.loads((ref / "record.json").read_text())
    assert record["outcome"] == "remediated"
    assert normalized(record, out) == normalized(expected, ref)
    assert fingerprint_path(tiny_demo.model_dir) == model_hash
    assert not work_dir(out / REMEDIATED).exists()


def test_resume_refuses_a_run_folder_of_other_inputs(
    tiny_demo: DemoBuild, remediated: tuple[Result, Path, str], tmp_path: Path
) -> None:
    _, ref, _ = remediated
    other = tmp_path / "other.yaml"
    other.write_text(_policy(tmp_path).read_text().replace("max_epochs: 10", "max_epochs: 11"))
    before = {p.name: p.stat().st_mtime_ns for p in ref.iterdir()}
    result = CliRunner().invoke(cli, _gate_args(tiny_demo, other, ref, "--resume"))
    after = {p.name: p.stat().st_mtime_ns for p in ref.iterdir()}
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: {ref}: cannot resume: the run there had other policy; rerun without "
        "--resume to start over"
    ]
    assert after == before  # nothing written, nothing removed


def test_without_resume_nothing_of_an_earlier_run_is_left(
    tiny_demo: DemoBuild, tmp_path: Path
) -> None:
    """A run that passes before remediation, in a folder where an earlier run erased: the
    earlier remediated model and measurements go, so none is taken for this run's."""
    out = tmp_path / "run"
    out.mkdir()
    (out / ".codeeraser-gate").write_text("codeeraser gate run folder\n")
    (out / REMEDIATED).mkdir()
    (out / "measurements.after.jsonl").write_text("{}\n")
    (out / "notes.txt").write_text("the user's")
    policy = _policy(tmp_path, remediate=False, limit=1000)
    result = CliRunner().invoke(cli, _gate_args(tiny_demo, policy, out))
    assert result.exit_code == 0, result.output
    assert not (out / REMEDIATED).exists()
    assert not (out / "measurements.after.jsonl").exists()
    assert (out / "notes.txt").read_text() == "the user's"


def test_allowlisted_secrets_are_counted_in_the_record_and_reports(
    tiny_demo: DemoBuild, tmp_path: Path
) -> None:
    import shutil

    from tests.audit.fakes import FAKES

    data = tmp_path / "data"
    shutil.copytree(tiny_demo.corpus_dir, data)
    key = FAKES["github"]
    (data / "ops.py").write_text(f'KEY = "{key}"  # pragma: allowlist secret\n')
    out = tmp_path / "out"
    args = _gate_args(tiny_demo, _policy(tmp_path, remediate=False, limit=1000), out)
    args[args.index("--data") + 1] = str(data)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    corpus = json.loads((out / "record.json").read_text())["corpus"]
    assert corpus["allowlisted"] == {"GitHub Token": 1}
    assert corpus["allowlisted_findings"] == [
        {"origin": "ops.py", "line": 1, "secret_type": "GitHub Token", "preview": "ghp_…(40)"}
    ]
    assert "Allowlisted inline" in (out / "report.html").read_text()
    assert (
        "Allowlisted inline (not measured): 1 (GitHub Token 1)" in (out / "summary.md").read_text()
    )
    assert not any(key in p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())


def test_the_erase_line_per_epoch_says_round_progress_drift_and_time_left() -> None:
    from gate.pipeline import epoch_text
    from gate.unlearn.remediation import EpochLog

    entry = EpochLog(3, 5, {"kl_retain": 0.0123}, 10, 30, 0.612, 0.045, 7, 40, 2.5)
    line = epoch_text(2, entry, 154, 0.0123, 10)
    assert line == (
        "Erase round 2 epoch 3: 114/154 forgotten, left: mean MA 0.612, EL_10 0.045, "
        "retain KL 0.0123, 2.5 s/epoch, at most 18 s left"
    )
    quiet = EpochLog(1, 5, {}, 0, 40, 0.9, None, 40, 40, 1.0)
    assert epoch_text(1, quiet, 40, None, 1).endswith(
        "0/40 forgotten, left: mean MA 0.900, 1.0 s/epoch, at most 0 s left"
    )
    held = EpochLog(1, 5, {}, 0, 40, 0.9, None, 40, 40, 1.0, 0.0123)
    assert "mean MA 0.900, held-out ppl +1.23%, 1.0 s/epoch" in epoch_text(1, held, 40, None, 1)


def test_under_lr_auto_the_rounds_aim_at_a_share_of_the_perplexity_budget() -> None:
    from gate.pipeline import HELDOUT_AIM, HELDOUT_FLOOR, round_limits
    from gate.unlearn.settings import UnlearnArgs

    auto, aim = UnlearnArgs(lr="auto"), HELDOUT_AIM * 0.05
    first = round_limits(auto, budget=0.05, spent=0.0, number=1)
    assert first.auto_ppl_max == pytest.approx(aim)
    assert first.auto_kl_max == auto.auto_kl_max
    later = round_limits(auto, budget=0.05, spent=0.01, number=2)
    assert later.auto_ppl_max == pytest.approx((1 + aim) / 1.01 - 1)  # the rest of the aim
    assert later.auto_kl_max < auto.auto_kl_max
    past_aim = round_limits(auto, budget=0.05, spent=0.03, number=3)
    assert past_aim.auto_ppl_max == pytest.approx(HELDOUT_FLOOR * aim)  # the floor
    near_end = round_limits(auto, budget=0.05, spent=0.0495, number=3)
    assert near_end.auto_ppl_max == pytest.approx(1.05 / 1.0495 - 1)  # never over the budget
    spent = round_limits(auto, budget=0.05, spent=0.06, number=2)
    assert spent.auto_ppl_max is None  # nothing left: the KL limits alone
    assert round_limits(auto, budget=None, spent=0.0, number=1) == auto  # no budget
    fixed = UnlearnArgs(lr=1e-4)
    assert round_limits(fixed, budget=0.05, spent=0.0, number=1) == fixed
    chosen = UnlearnArgs(lr="auto", auto_ppl_max=0.01)
    assert round_limits(chosen, budget=0.05, spent=0.0, number=1).auto_ppl_max == 0.01


def test_a_stage_frees_what_it_dropped_even_in_reference_cycles() -> None:
    """A loaded Transformers model sits in reference cycles: the stage collects them, so
    the next stage does not load its model beside the last one."""
    import gc
    import weakref

    from gate.pipeline import _stage
    from gate.policy import load_policy
    from gate.record import CorpusInfo, RecordBuilder

    class Held:
        def __init__(self) -> None:
            self.me = self  # a cycle, as a model's is

    builder = RecordBuilder(
        model_path=Path("/models/tiny"),
        corpus=CorpusInfo(path="/data/corpus", format="dir", samples=1),
        policy=load_policy("default"),
        invocation=["codeeraser", "gate"],
        model_sha256="0" * 64,
    )
    enabled = gc.isenabled()
    gc.disable()  # only the stage may collect
    try:
        with _stage(builder, "measure"):
            held = Held()
            gone = weakref.ref(held)
            del held
            assert gone() is not None  # refcounting alone does not free a cycle
        assert gone() is None
    finally:
        if enabled:
            gc.enable()
    assert "measure" in builder.record.timings
