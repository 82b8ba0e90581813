"""Paths: inputs that are not there or not what they should be, outputs that would land
on an input, a run folder in use, --force on what the tool did not write, secrets and
terminal escapes in paths. Each is exit 2 before any work, naming the option, and
leaves every input as it was.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from gate.demo.build import DemoBuild
from gate.paths import LOCK
from tests.gate.bad_input import Build, Case, Env, run_case

GITHUB = "ghp_" + "aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gH3jK5"  # a token-shaped value
ESC = "\x1b[2J\x1b]0;owned\x07"


def _jsonl_data(env: Env) -> Path:
    return env.file("data.jsonl", '{"id": "a", "content": "x = 1\\n"}\n')


def _scan_onto_data(env: Env) -> list[str]:
    data = _jsonl_data(env)
    return ["scan", str(data), "--out", str(data)]


def _scan_into_folder(env: Env) -> list[str]:
    corpus = env.corpus_copy()
    return ["scan", str(corpus), "--out", str(corpus / "findings.jsonl")]


def _scan_onto_baseline(env: Env) -> list[str]:
    baseline = env.file("base.jsonl", "")
    return ["scan", str(env.demo.corpus_dir), "--baseline", str(baseline), "--out", str(baseline)]


def _scan_onto_linked_data(env: Env) -> list[str]:
    data = _jsonl_data(env)
    (env.tmp / "out.jsonl").symlink_to(data)
    return ["scan", str(data), "--out", str(env.tmp / "out.jsonl")]


def _scan_onto_hard_link(env: Env) -> list[str]:
    data = _jsonl_data(env)
    os.link(data, env.tmp / "twin.jsonl")
    return ["scan", str(data), "--out", str(env.tmp / "twin.jsonl")]


def _measure_into_model(env: Env) -> list[str]:
    model = env.model_copy()
    return env.measure(model, out=model / "config.json")


def _measure_onto_findings(env: Env) -> list[str]:
    findings = env.file("f.jsonl", env.demo.planted.read_text())
    return env.measure(env.demo.model_dir, findings=findings, out=findings)


def _measure_into_data(env: Env) -> list[str]:
    corpus = env.corpus_copy()
    return env.measure(env.demo.model_dir, data=corpus, out=corpus / "m.jsonl")


def _calibrate(env: Env, unseen: Path, out: Path, model: Path | None = None) -> list[str]:
    return [
        "calibrate", "--model", str(model or env.demo.model_dir), "--unseen", str(unseen),
        "--out", str(out),
    ]  # fmt: skip


def _calibrate_into_unseen(env: Env) -> list[str]:
    unseen = env.tmp / "unseen"
    unseen.mkdir()
    (unseen / "a.py").write_text("x = 1\n")
    return _calibrate(env, unseen, unseen / "t.json")


def _calibrate_into_model(env: Env) -> list[str]:
    model = env.model_copy()
    return _calibrate(env, env.demo.heldout_dir, model / "thresholds.json", model)


def _erase_onto(where: str) -> Build:
    def build(env: Env) -> list[str]:
        model = env.model_copy()
        out = {"model": model / "erased", "parent": env.tmp, "model itself": model}[where]
        return env.erase(model, out)

    return build


def _gate_out(where: str) -> Build:
    def build(env: Env) -> list[str]:
        policy = env.file("policies/p.yaml", "name: mine\n")
        out = {
            "data": env.demo.corpus_dir,
            "parent of data": env.demo.corpus_dir.parent,
            "inside heldout": env.demo.heldout_dir / "run",
            "policy folder": policy.parent,
        }[where]
        return [*env.gate(None, out), "--policy", str(policy)]

    return build


def _gate_locked(env: Env) -> list[str]:
    out = env.tmp / "run"
    out.mkdir()
    (out / ".codeeraser-gate").write_text("codeeraser gate run folder\n")
    handle = (out / LOCK).open("w")
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run holds it
    env.cleanups.append(handle.close)  # held while the command runs
    return env.gate(None, out)


def _force_over_theirs(env: Env) -> list[str]:
    env.file("theirs/report.html", "<p>my own report</p>")
    env.file("theirs/notes.txt", "mine")
    return env.gate(None, env.tmp / "theirs", "--force")


def _erase_force_over_theirs(env: Env) -> list[str]:
    env.file("theirs/notes.txt", "mine")
    return env.erase(None, env.tmp / "theirs", "--force")


def _erase_work_folder_theirs(env: Env) -> list[str]:
    env.file(".erased.partial/notes.txt", "mine")
    return env.erase(None, env.tmp / "erased")


def _fifo_data(env: Env) -> list[str]:
    os.mkfifo(env.tmp / "data.jsonl")
    return env.scan(env.tmp / "data.jsonl")


def _link_loop(env: Env) -> list[str]:
    (env.tmp / "a").symlink_to(env.tmp / "b")
    (env.tmp / "b").symlink_to(env.tmp / "a")
    return env.scan(env.tmp / "a")


def _secret_path(env: Env) -> list[str]:
    return env.scan(env.tmp / f"clone-{GITHUB}" / "data.jsonl")


def _escape_path(env: Env) -> list[str]:
    return env.scan(env.tmp / f"data{ESC}.jsonl")


def _markup_path(env: Env) -> list[str]:
    return env.scan(env.tmp / "[bold red]data[/].jsonl")


def _out_with_secret(env: Env) -> list[str]:
    return [*env.scan(env.demo.corpus_dir), "--out", str(env.tmp / f"{GITHUB}.jsonl")]


def _out_with_escape(env: Env) -> list[str]:
    return [*env.scan(env.demo.corpus_dir), "--out", str(env.tmp / f"f{ESC}.jsonl")]


def _measure_missing(option: str) -> Build:
    def build(env: Env) -> list[str]:
        args = env.measure(env.demo.model_dir)
        args[args.index(option) + 1] = str(env.tmp / "not-there")
        return args

    return build


def _erase_with(option: str, value: str = "not-there") -> Build:
    return lambda env: env.erase(None, None, option, str(env.tmp / value))


CASES = [
    Case("scan --out is the data", _scan_onto_data, ("--out", "is DATA", "itself")),
    Case("scan --out inside the data folder", _scan_into_folder, ("is inside DATA",)),
    Case("scan --out is the baseline", _scan_onto_baseline, ("is --baseline", "itself")),
    Case("scan --out links to the data", _scan_onto_linked_data, ("is DATA",)),
    Case("scan --out is a hard link of the data", _scan_onto_hard_link, ("is DATA",)),
    Case("measure --out inside the model", _measure_into_model, ("is inside --model",)),
    Case("measure --out is the findings", _measure_onto_findings, ("is --findings",)),
    Case("measure --out inside the data", _measure_into_data, ("is inside --data",)),
    Case("calibrate --out inside unseen code", _calibrate_into_unseen, ("is inside --unseen",)),
    Case("calibrate --out inside the model", _calibrate_into_model, ("is inside --model",)),
    Case("erase --out inside the model", _erase_onto("model"), ("is inside --model",)),
    Case("erase --out holds the model", _erase_onto("parent"), ("contains --model",)),
    Case("erase --out is the model", _erase_onto("model itself"), ("is --model",)),
    Case(
        "gate --out is the data",
        _gate_out("data"),
        (
            "--out",
            "is --data",
        ),
    ),
    Case("gate --out holds the data", _gate_out("parent of data"), ("contains --model",)),
    Case(
        "gate --out inside held-out code",
        _gate_out("inside heldout"),
        ("is inside utility.heldout",),
    ),
    Case("gate --out holds the policy", _gate_out("policy folder"), ("contains --policy",)),
    Case("gate run folder in use", _gate_locked, ("another run is using this folder",)),
    Case(
        "gate --force over a report it did not write",
        _force_over_theirs,
        ("--force would replace report.html", "did not write"),
        kept=("theirs/report.html", "theirs/notes.txt"),
    ),
    Case(
        "erase --force over a folder it did not write",
        _erase_force_over_theirs,
        ("not a model written by codeeraser erase",),
        kept=("theirs/notes.txt",),
    ),
    Case(
        "erase working folder of the same name",
        _erase_work_folder_theirs,
        ("not made by codeeraser erase",),
        kept=(".erased.partial/notes.txt",),
    ),
    Case(
        "data is a FIFO",
        _fifo_data,
        ("DATA", "is a FIFO"),
    ),
    Case(
        "data is a link loop",
        _link_loop,
        ("DATA", "loop"),
    ),
    Case(
        "data path 5000 characters long",
        lambda env: env.scan(env.tmp / (("d" * 200 + "/") * 25) / "x.jsonl"),
        ("DATA", "too long"),
    ),
    Case(
        "data path with a 300-byte name",
        lambda env: env.scan(env.tmp / ("n" * 300 + ".jsonl")),
        ("DATA", "too long"),
    ),
    Case(
        "data under a file",
        lambda env: env.scan(env.file("plain.txt", "x") / "data.jsonl"),
        ("DATA", "not a folder"),
    ),
    Case(
        "data path holds a token",
        _secret_path,
        ("DATA", "«ghp_…(40)#", "no such file or folder"),
        absent=(GITHUB,),
    ),
    Case(
        "data path holds terminal escapes",
        _escape_path,
        ("DATA", "no such file or folder"),
        absent=("\x1b", "\x07"),
    ),
    Case("data path holds Rich markup", _markup_path, ("[bold red]data[/].jsonl: no such",)),
    Case(
        "--out holds a token",
        _out_with_secret,
        ("--out", "looks like a secret"),
        absent=(GITHUB,),
    ),
    Case("--out holds terminal escapes", _out_with_escape, ("--out", "control"), absent=("\x1b",)),
    Case(
        "--out under a file",
        lambda env: [*env.scan(env.demo.corpus_dir), "--out", str(env.file("f", "x") / "o.jsonl")],
        ("--out", "not a folder"),
    ),
    Case(
        "--findings is a folder",
        lambda env: env.measure(env.demo.model_dir, findings=env.tmp),
        ("--findings", "is a directory", "--help"),
    ),
    Case(
        "--model is a file",
        lambda env: env.measure(env.file("m.bin", "x")),
        ("--model", "is a file, not a folder"),
    ),
    Case(
        "measure --findings missing",
        _measure_missing("--findings"),
        ("--findings", "no such findings file"),
    ),
    Case("measure --data missing", _measure_missing("--data"), ("--data", "not-there: no such")),
    Case(
        "measure --thresholds file missing",
        lambda env: [*env.measure(env.demo.model_dir), "--thresholds", str(env.tmp / "t.json")],
        ("--thresholds", "no such thresholds file"),
    ),
    Case("erase --retain missing", _erase_with("--retain"), ("--retain", "no such")),
    Case("erase --heldout missing", _erase_with("--heldout"), ("--heldout", "no such")),
    Case(
        "erase --heldout-findings missing",
        _erase_with("--heldout-findings"),
        ("--heldout-findings",),
    ),
    Case(
        "gate --heldout missing",
        lambda env: [*env.gate(None, None, heldout=False), "--heldout", str(env.tmp / "h")],
        ("--heldout", "h: no such"),
    ),
    Case(
        "gate --unseen missing",
        lambda env: [*env.gate(None), "--unseen", str(env.tmp / "u")],
        ("--unseen", "u: no such"),
    ),
    Case(
        "report of a record that is not one",
        lambda env: ["report", str(env.demo.planted), "--out", str(env.tmp / "r")],
        ("not valid JSON",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_bad_path_is_refused_before_any_work(
    case: Case, tiny_demo: DemoBuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_case(case, Env(tmp_path, tiny_demo, monkeypatch))
