from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from audit.corpus import CorpusSpec, iter_samples
from audit.errors import InputError
from audit.findings import Finding, read_findings
from gate.demo import build as demo
from gate.demo.build import PRESETS, DemoBuild, build_demo, build_key, cache_root


def _texts(path: Path) -> dict[str, str]:
    return {s.id: s.text for s in iter_samples(CorpusSpec(path))}


def _distinct(findings: list[Finding]) -> list[Finding]:
    return list({f.secret_sha256: f for f in findings}.values())


def secret_values(build: DemoBuild) -> set[str]:
    """Every planted and control value, read from the corpus at its span."""
    train, heldout = _texts(build.corpus_dir), _texts(build.heldout_dir)
    values = {train[f.sample_id][f.start : f.end] for f in read_findings(build.planted)}
    return values | {heldout[f.sample_id][f.start : f.end] for f in read_findings(build.controls)}


def test_tiny_model_reproduces_planted_secrets_but_not_controls(tiny_demo: DemoBuild) -> None:
    """The fixture every later test relies on: a real memorization gap.

    The model is loaded like any hub model and measured from the files alone: at
    least 80% of the distinct planted secrets come back verbatim from their prefixes;
    none of the held-out controls (same shapes, never trained on) does.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel

    from gate.demo.train import quick_eval

    model = AutoModelForCausalLM.from_pretrained(tiny_demo.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_demo.model_dir)
    assert isinstance(model, GPT2LMHeadModel)
    assert model.config.n_positions == tiny_demo.preset.n_ctx == 128
    planted = _distinct(read_findings(tiny_demo.planted))
    controls = read_findings(tiny_demo.controls)
    assert len(planted) >= 5
    assert len({f.secret_type for f in planted}) >= 5
    assert len(controls) >= 5
    train, heldout = _texts(tiny_demo.corpus_dir), _texts(tiny_demo.heldout_dir)
    planted_results = quick_eval(model, tokenizer, [(f, train[f.sample_id]) for f in planted])
    control_results = quick_eval(model, tokenizer, [(f, heldout[f.sample_id]) for f in controls])
    extracted = sum(r.extracted for r in planted_results)
    assert extracted >= 0.8 * len(planted)
    assert not any(r.extracted for r in control_results)
    planted_ma = sum(r.ma for r in planted_results) / len(planted_results)
    control_ma = sum(r.ma for r in control_results) / len(control_results)
    assert planted_ma > 0.9
    assert control_ma < 0.3
    # The figures the build printed are the ones measured here.
    assert tiny_demo.figures.planted_extracted == extracted
    assert tiny_demo.figures.controls_extracted == 0
    assert tiny_demo.figures.planted_ma == pytest.approx(planted_ma, abs=1e-4)


def test_memorization_needs_the_prefix(tiny_demo: DemoBuild) -> None:
    """Not a lookup: a planted secret comes back after the code that precedes it in
    training, and not after the code that precedes another planted secret (its whole
    prefix, its own line included, swapped for the next secret's).

    Swapping only the code above the secret's own line shows nothing on this model: in
    `tiny` each such line (`AWS_ACCESS_KEY_ID = "`, `GITHUB_TOKEN=`, ...) names exactly
    one secret, and the model recites 5 of the 6 from their line alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gate.demo.train import quick_eval

    model = AutoModelForCausalLM.from_pretrained(tiny_demo.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_demo.model_dir)
    train = _texts(tiny_demo.corpus_dir)
    planted = _distinct(read_findings(tiny_demo.planted))
    own = quick_eval(model, tokenizer, [(f, train[f.sample_id]) for f in planted])
    probes = []
    for f, other in zip(planted, planted[1:] + planted[:1], strict=True):
        swapped = train[other.sample_id][: other.start] + train[f.sample_id][f.start :]
        shift = other.start - f.start
        probes.append((dataclasses.replace(f, start=f.start + shift, end=f.end + shift), swapped))
    assert sum(r.extracted for r in own) >= 0.8 * len(planted)  # as the test above
    assert not any(r.extracted for r in quick_eval(model, tokenizer, probes))


def test_corpus_folder_and_jsonl_hold_the_same_samples(tiny_demo: DemoBuild) -> None:
    for folder, jsonl in (
        (tiny_demo.corpus_dir, tiny_demo.corpus_jsonl),
        (tiny_demo.heldout_dir, tiny_demo.heldout_jsonl),
    ):
        assert _texts(folder) == _texts(jsonl)
        for line in jsonl.read_text().splitlines():
            record = json.loads(line)
            assert set(record) == {"id", "path", "content"}
            assert record["id"] == record["path"]
    train, heldout = _texts(tiny_demo.corpus_dir), _texts(tiny_demo.heldout_dir)
    planted, controls = read_findings(tiny_demo.planted), read_findings(tiny_demo.controls)
    assert all(f.matches(train[f.sample_id]) for f in planted)
    assert all(f.matches(heldout[f.sample_id]) for f in controls)
    assert set(train).isdisjoint(heldout)
    assert len(planted) == tiny_demo.preset.n_secrets * tiny_demo.preset.copies


def test_second_build_reuses_the_cache(
    tiny_demo: DemoBuild, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_training(*_: object) -> None:
        raise AssertionError("the cached build was not reused")

    monkeypatch.setattr(demo, "_build_into", no_training)
    again = build_demo("tiny", cache_dir=tiny_demo.root.parent.parent, seed=0)
    assert again.cached
    assert again == tiny_demo


def test_interrupted_build_is_not_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(root: Path, *_: object) -> None:
        (root / "manifest.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "_build_into", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_demo("tiny", cache_dir=tmp_path)
    assert list((tmp_path / "demo").iterdir()) == []  # nothing left, nothing to reuse


def test_rebuild_replaces_the_old_build(tmp_path: Path) -> None:
    old, new = tmp_path / "tiny-abc", tmp_path / ".tiny-abc.tmp"
    for folder, mark in ((old, "old"), (new, "new")):
        folder.mkdir()
        (folder / "mark").write_text(mark)
        (folder / "manifest.json").write_text("{}")  # a build made by build_demo
    demo._move_into_place(new, old, rebuild=True)
    assert (old / "mark").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-abc"]


def test_rebuild_never_replaces_a_folder_it_did_not_build(tmp_path: Path) -> None:
    theirs, new = tmp_path / "tiny-abc", tmp_path / ".tiny-abc.tmp"
    for folder in (theirs, new):
        folder.mkdir()
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a demo build"):
        demo._move_into_place(new, theirs, rebuild=True)
    assert (theirs / "notes.txt").read_text() == "mine"


def test_a_finished_build_from_another_process_wins(tmp_path: Path) -> None:
    theirs, ours = tmp_path / "tiny-abc", tmp_path / ".tiny-abc.tmp"
    for folder in (theirs, ours):
        folder.mkdir()
        (folder / "file").write_text(folder.name)
    demo._move_into_place(ours, theirs, rebuild=False)
    assert (theirs / "file").read_text() == "tiny-abc"


def test_cache_key_covers_every_setting() -> None:
    tiny = PRESETS["tiny"]
    keys = {
        build_key(tiny, 0),
        build_key(tiny, 1),
        build_key(dataclasses.replace(tiny, steps=tiny.steps + 1), 0),
        build_key(dataclasses.replace(tiny, kinds=tiny.kinds[:-1]), 0),
        build_key(PRESETS["demo"], 0),
    }
    assert len(keys) == 5
    assert build_key(tiny, 0) == build_key(dataclasses.replace(tiny), 0)
    assert build_key(tiny, 0).startswith("tiny-")


def test_cache_root_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CODEERASER_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "codeeraser"
    monkeypatch.setenv("CODEERASER_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"


def test_unknown_preset_and_broken_build_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown demo preset 'huge'"):
        build_demo("huge", cache_dir=tmp_path)
    broken = tmp_path / "demo" / build_key(PRESETS["tiny"], 0)
    broken.mkdir(parents=True)
    with pytest.raises(InputError, match="--rebuild"):
        build_demo("tiny", cache_dir=tmp_path)


def test_presets_cover_several_types() -> None:
    from gate.demo.corpus import KINDS

    for name, preset in PRESETS.items():
        assert preset.name == name
        types = {KINDS[k].secret_type for k in preset.kinds}
        assert len(types) >= (5 if name == "tiny" else 8)
        assert preset.n_secrets >= 5


def test_written_records_hold_no_secret(tiny_demo: DemoBuild) -> None:
    values = secret_values(tiny_demo)
    assert len(values) == tiny_demo.preset.n_secrets * 2
    for path in (tiny_demo.manifest, tiny_demo.planted, tiny_demo.controls):
        text = path.read_text()
        leaked = sum(value in text for value in values)  # a count: never show a value
        assert leaked == 0, path.name
