"""Every command, once, on the tiny demo at the most verbose level (-vv):

- no planted or control secret appears in anything it writes or prints: output files
  of every format (JSONL, JSON, HTML, SARIF, Markdown, the model folder), the terminal,
  the debug log, GitHub step outputs and summary, and error messages raised while a
  secret is in scope (a corpus edited after the scan; a bug whose exception message
  holds a secret);
- every command that reads a model leaves the model folder byte for byte as it was;
- the same inputs, seed and settings give byte-identical outputs twice.
"""

from __future__ import annotations

import functools
import html
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from gate.cli import COMMANDS, cli
from gate.demo.build import DemoBuild
from gate.record import fingerprint_path
from tests.gate.demo.test_build import secret_values

POLICY = """
extraction: {prefix_tokens: 96, sampled: {enabled: true, samples: 2}}
thresholds: {ma: 0.6, el_10: 0.3}
rules: [{metric: extracted_greedy, limit: 0}]
remediation: {enabled: false}
"""
MODEL_READERS = {"measure", "calibrate", "erase", "gate", "demo"}


@dataclass
class Run:
    """One command run: what it printed, the folder it wrote to, the model's hash."""

    name: str
    exit_code: int
    output: str  # stdout and stderr, debug log included
    folder: Path
    model_before: str
    model_after: str
    files: dict[str, str] = field(default_factory=dict)  # path -> text, every file written


def _text_files(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): p.read_text(errors="replace")
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith(".safetensors")
    }


class Runner:
    def __init__(self, demo: DemoBuild, root: Path) -> None:
        self.demo, self.root = demo, root
        self.runs: dict[str, Run] = {}

    def __call__(self, name: str, build: Callable[[Path], list[str]], **env: str) -> Run:
        folder = self.root / name.replace(" ", "-")
        folder.mkdir()
        before = fingerprint_path(self.demo.model_dir)
        result = CliRunner(env=env or None).invoke(cli, ["-vv", *build(folder)])
        run = Run(
            name=name,
            exit_code=result.exit_code,
            output=result.output,
            folder=folder,
            model_before=before,
            model_after=fingerprint_path(self.demo.model_dir),
            files=_text_files(folder),
        )
        self.runs[name] = run
        return run


def _measure_args(demo: DemoBuild, out: Path, data: Path | None = None) -> list[str]:
    return [
        "measure", "--model", str(demo.model_dir), "--data", str(data or demo.corpus_dir),
        "--findings", str(demo.planted), "--out", str(out / "measurements.jsonl"),
        "--samples", "2", "--seed", "3",
    ]  # fmt: skip


def _edited_corpus(demo: DemoBuild, folder: Path) -> Path:
    """The corpus with one character of every planted secret changed after the scan."""
    from audit.findings import read_findings

    corpus = folder / "edited"
    shutil.copytree(demo.corpus_dir, corpus)
    for finding in read_findings(demo.planted):
        path = corpus / finding.sample_id
        text = path.read_text()
        flipped = "A" if text[finding.start] != "A" else "B"
        path.write_text(text[: finding.start] + flipped + text[finding.start + 1 :])
    return corpus


@pytest.fixture(scope="module")
def runs(tiny_demo: DemoBuild, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    demo, root = tiny_demo, tmp_path_factory.mktemp("every-command")
    policy = root / "policy.yaml"
    policy.write_text(POLICY)
    run = Runner(demo, root)
    run("scan", lambda out: ["scan", str(demo.corpus_dir), "--out", str(out / "findings.jsonl")])
    files = [str(p) for p in sorted(demo.corpus_dir.rglob("*")) if p.is_file()]
    run("scan-files", lambda out: ["scan-files", *files])
    run(
        "scan-files, accept",
        lambda out: ["scan-files", "--baseline", str(out / "baseline.jsonl"), "--accept", *files],
    )
    measured = run("measure", lambda out: _measure_args(demo, out))
    run(
        "calibrate",
        lambda out: [
            "calibrate", "--model", str(demo.model_dir), "--unseen", str(demo.heldout_dir),
            "--out", str(out / "thresholds.json"), "--sequences", "8",
            "--data", str(demo.corpus_dir),
        ],
    )  # fmt: skip
    run(
        "erase",
        lambda out: [
            "erase", "--model", str(demo.model_dir), "--data", str(demo.corpus_dir),
            "--findings", str(demo.planted),
            "--measurements", str(measured.folder / "measurements.jsonl"),
            "--out", str(out / "erased"), "--lr", "1e-3", "--epochs", "2",
            "--heldout", str(demo.heldout_dir), "--heldout-findings", str(demo.controls),
        ],
    )  # fmt: skip
    gated = run(
        "gate",
        lambda out: [
            "gate", "--model", str(demo.model_dir), "--data", str(demo.corpus_dir),
            "--policy", str(policy), "--out", str(out / "run"),
        ],
        GITHUB_ACTIONS="true",
        GITHUB_STEP_SUMMARY=str(root / "gate" / "step-summary.md"),
        GITHUB_OUTPUT=str(root / "gate" / "step-outputs.txt"),
    )  # fmt: skip
    run(
        "report",
        lambda out: [
            "report", str(gated.folder / "run" / "record.json"), "--out", str(out),
            "--format", "html,json,sarif,md",
        ],
    )  # fmt: skip
    run(
        "demo",
        lambda out: [
            "demo", "--preset", "tiny", "--cache-dir", str(demo.root.parent.parent),
            "--policy", str(policy), "--out", str(out / "run"),
        ],
    )  # fmt: skip
    run(
        "measure, corpus edited since the scan",
        lambda out: _measure_args(demo, out, _edited_corpus(demo, out)),
    )
    return run.runs


@pytest.fixture(scope="module")
def secrets(tiny_demo: DemoBuild) -> set[str]:
    values = secret_values(tiny_demo)
    return {form for v in values for form in (v, html.escape(v), json.dumps(v)[1:-1])}


def test_every_command_ran(runs: dict[str, Run]) -> None:
    assert set(COMMANDS) <= set(runs)
    expected = {name: 0 for name in COMMANDS} | {
        "gate": 1,  # the tiny model leaks and remediation is off
        "scan-files": 1,  # no baseline: every finding is new
        "scan-files, accept": 0,
        "demo": 1,
        "measure, corpus edited since the scan": 2,
    }
    assert {name: r.exit_code for name, r in runs.items()} == expected, {
        name: r.output[-500:] for name, r in runs.items() if r.exit_code != expected[name]
    }
    for name in ("scan", "measure"):  # the most verbose level was on: findings are logged
        assert "DEBUG" in runs[name].output, name


def test_no_secret_in_any_output_format_log_or_error(
    runs: dict[str, Run], secrets: set[str]
) -> None:
    formats = {Path(f).suffix for r in runs.values() for f in r.files}
    assert {".jsonl", ".json", ".html", ".sarif", ".md", ".txt"} <= formats
    leaks = [
        f"{r.name}: {where}"
        for r in runs.values()
        for where, text in {"terminal and log": r.output, **r.files}.items()
        if any(form in text for form in secrets)
    ]
    assert leaks == []  # names only: an assertion message never shows a secret
    edited = runs["measure, corpus edited since the scan"].output
    assert "does not match its hash" in edited  # the error raised with the secret in scope


def test_a_bug_raised_with_a_secret_in_scope_does_not_show_it(
    tiny_demo: DemoBuild, secrets: set[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception whose message quotes the secret being measured."""
    import audit.probes

    real = audit.probes.build_probes

    def broken(findings, texts, *args, **kwargs):  # type: ignore[no-untyped-def]
        finding = findings[0]
        secret = texts[finding.sample_id][finding.start : finding.end]
        raise ValueError(f"cannot tokenize {secret!r}")

    monkeypatch.setattr(audit.probes, "build_probes", functools.wraps(real)(broken))
    monkeypatch.setattr("audit.extraction.build_probes", broken, raising=False)
    result = CliRunner().invoke(cli, ["-vv", *_measure_args(tiny_demo, tmp_path)])
    assert result.exit_code == 3
    assert "internal error (ValueError" in result.output
    assert "message withheld" in result.output  # the -vv traceback
    assert not any(form in result.output for form in secrets)


def test_commands_that_read_a_model_leave_it_unchanged(runs: dict[str, Run]) -> None:
    readers = {name for name in runs if name.split(",")[0] in MODEL_READERS}
    assert readers >= MODEL_READERS
    changed = [name for name in readers if runs[name].model_before != runs[name].model_after]
    assert changed == []


def test_the_same_inputs_give_byte_identical_outputs(
    tiny_demo: DemoBuild, runs: dict[str, Run], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """measure (with the seeded sampled attack), calibrate and the gate again; scan again
    with worker processes: the files are byte-identical and the verdict the same. (Erase,
    and the gate with remediation: see the resume tests, whose resumed runs match
    uninterrupted ones byte for byte.)"""
    from audit import scan

    again = Runner(tiny_demo, tmp_path)
    measured = again("measure", lambda out: _measure_args(tiny_demo, out))
    assert measured.files == runs["measure"].files
    calibrated = again(
        "calibrate",
        lambda out: [
            "calibrate", "--model", str(tiny_demo.model_dir), "--unseen",
            str(tiny_demo.heldout_dir), "--out", str(out / "thresholds.json"), "--sequences", "8",
            "--data", str(tiny_demo.corpus_dir),
        ],
    )  # fmt: skip
    assert calibrated.files == runs["calibrate"].files
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    gated = again(
        "gate",
        lambda out: [
            "gate", "--model", str(tiny_demo.model_dir), "--data", str(tiny_demo.corpus_dir),
            "--policy", str(policy), "--out", str(out / "run"),
        ],
    )  # fmt: skip
    first = runs["gate"].files
    for name in ("run/findings.jsonl", "run/measurements.before.jsonl"):
        assert gated.files[name] == first[name], name
    verdicts = [
        json.loads(files["run/record.json"])["verdict_before"] for files in (gated.files, first)
    ]
    assert verdicts[0] == verdicts[1]
    small = functools.partial(scan.ScanOptions, chunk_samples=2, parallel_min_chars=0)
    # the corpus goes to 2 worker processes (as the command module sees ScanOptions)
    monkeypatch.setattr("gate.commands.scan.ScanOptions", small)
    scanned = again(
        "scan",
        lambda out: [
            "scan", str(tiny_demo.corpus_dir), "--out", str(out / "findings.jsonl"), "--jobs", "2",
        ],
    )  # fmt: skip
    assert "2 worker process" in scanned.output
    assert scanned.files == runs["scan"].files


# ---------------------------------------------------------------- secrets outside the text


def _values_by_type(demo: DemoBuild) -> dict[str, str]:
    """One planted secret value per secret type, read from the corpus at its span."""
    from audit.corpus import CorpusSpec, iter_samples
    from audit.findings import read_findings

    texts = {s.id: s.text for s in iter_samples(CorpusSpec(demo.corpus_dir))}
    return {f.secret_type: texts[f.sample_id][f.start : f.end] for f in read_findings(demo.planted)}


@dataclass(frozen=True)
class Hidden:
    """A corpus whose names, ids and paths hold secrets, and the runs of every command."""

    secrets: set[str]  # every value hidden in a name, an id or a path
    folder: Path  # the corpus as a folder: file and folder names hold secrets
    runs: dict[str, Run]


def _named_corpus(demo: DemoBuild, root: Path, values: dict[str, str]) -> Path:
    """The demo corpus with two more files, named after an AWS key and inside a folder
    named after a GitHub token, each a copy of a file that holds a planted secret."""
    from audit.findings import read_findings

    corpus = root / "named"
    shutil.copytree(demo.corpus_dir, corpus)
    leaky = read_findings(demo.planted)[0].sample_id
    for name in (f"keys/{values['AWS Access Key']}.py", f"{values['GitHub Token']}/settings.py"):
        (corpus / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus / leaky, corpus / name)
    return corpus


def _records_corpus(demo: DemoBuild, root: Path, values: dict[str, str]) -> Path:
    """The demo corpus as JSONL records whose ids hold a Stripe key or an e-mail address,
    and whose paths are clone URLs with a password in them."""
    from audit.corpus import CorpusSpec, iter_samples

    password = values["Secret Keyword"]
    lines = []
    for index, sample in enumerate(iter_samples(CorpusSpec(demo.corpus_dir))):
        record = {"id": sample.id, "path": sample.id, "content": sample.text}
        if index % 3 == 0:
            record["id"] = f"{values['Stripe Access Key']}/{sample.id}"
        elif index % 3 == 1:
            record["id"] = f"{index}-{values['Email Address']}.json"
        record["path"] = f"https://deploy:{password}@git.example.org/org/repo/{sample.id}"
        lines.append(json.dumps(record) + "\n")
    path = root / "records.jsonl"
    path.write_text("".join(lines))
    return path


@pytest.fixture(scope="module")
def hidden(tiny_demo: DemoBuild, tmp_path_factory: pytest.TempPathFactory) -> Hidden:
    demo, root = tiny_demo, tmp_path_factory.mktemp("hidden")
    values = _values_by_type(demo)
    hidden = {values[t] for t in ("AWS Access Key", "GitHub Token", "Stripe Access Key")}
    hidden |= {values["Email Address"], values["Secret Keyword"]}
    folder, records = _named_corpus(demo, root, values), _records_corpus(demo, root, values)
    policy = root / "policy.yaml"
    policy.write_text(POLICY)
    run = Runner(demo, root)
    scanned = run("scan names", lambda out: ["scan", str(folder), "--out", str(out / "f.jsonl")])
    measured = run(
        "measure names",
        lambda out: [
            "measure", "--model", str(demo.model_dir), "--data", str(folder),
            "--findings", str(scanned.folder / "f.jsonl"), "--out", str(out / "m.jsonl"),
        ],
    )  # fmt: skip
    run(
        "erase names",
        lambda out: [
            "erase", "--model", str(demo.model_dir), "--data", str(folder),
            "--findings", str(scanned.folder / "f.jsonl"),
            "--measurements", str(measured.folder / "m.jsonl"),
            "--out", str(out / "erased"), "--lr", "1e-3", "--epochs", "1",
        ],
    )  # fmt: skip
    gated = run(
        "gate records",
        lambda out: [
            "gate", "--model", str(demo.model_dir), "--data", str(records),
            "--policy", str(policy), "--out", str(out / "run"), "--jobs", "1",
        ],
        GITHUB_ACTIONS="true",
        GITHUB_STEP_SUMMARY=str(root / "gate-records" / "step-summary.md"),
        GITHUB_OUTPUT=str(root / "gate-records" / "step-outputs.txt"),
    )  # fmt: skip
    run(
        "report records",
        lambda out: ["report", str(gated.folder / "run" / "record.json"), "--out", str(out)],
    )
    run("scan-files names", lambda out: ["scan-files", *map(str, sorted(folder.glob("keys/*")))])
    return Hidden(secrets=hidden, folder=folder, runs=run.runs)


def test_secrets_in_file_names_ids_and_paths_reach_no_output(
    hidden: Hidden, secrets: set[str]
) -> None:
    """File and folder names, record ids and clone-URL paths that hold secrets: every
    command runs as usual, and neither those secrets nor the planted ones appear in
    any file, the terminal, the -vv log or the GitHub outputs."""
    codes = {name: r.exit_code for name, r in hidden.runs.items()}
    assert codes == {
        "scan names": 0, "measure names": 0, "erase names": 0, "gate records": 1,
        "report records": 0, "scan-files names": 1,
    }, {n: r.output[-400:] for n, r in hidden.runs.items()}  # fmt: skip
    forms = secrets | {f for v in hidden.secrets for f in (v, html.escape(v), json.dumps(v)[1:-1])}
    leaks = [
        f"{r.name}: {where}"
        for r in hidden.runs.values()
        for where, text in {"terminal and log": r.output, **r.files}.items()
        if any(form in text for form in forms)
    ]
    assert leaks == []
    record = json.loads(hidden.runs["gate records"].files["run/record.json"])
    origins = {f["origin"] for f in record["findings"]}
    assert any(o.startswith("https://deploy:«") for o in origins)


def test_a_file_named_after_a_secret_keeps_one_placeholder_everywhere(hidden: Hidden) -> None:
    """The same name maps to the same placeholder in the scan's findings and in the
    measurements taken from them; measure finds the file by it."""
    findings = [
        json.loads(line) for line in hidden.runs["scan names"].files["f.jsonl"].splitlines()
    ]
    named = {f["sample_id"] for f in findings if f["sample_id"].startswith("keys/«AKIA…(20)#")}
    assert len(named) == 1
    rows = [json.loads(line) for line in hidden.runs["measure names"].files["m.jsonl"].splitlines()]
    assert named <= {r["sample_id"] for r in rows}
    assert any(f["sample_id"].startswith("«ghp_…(40)#") for f in findings)
