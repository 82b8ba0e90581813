from __future__ import annotations

import ast
import dataclasses
import json
from collections import Counter

import pytest
import yaml

from gate.demo.build import PRESETS
from gate.demo.corpus import DETECTOR, KINDS, DemoCorpus, excerpt, make_corpus, stdlib_root


@pytest.fixture(scope="module")
def demo_corpus() -> DemoCorpus:
    """The full `demo` preset's corpus (no model): 300 files, 20 secrets x 10 copies."""
    return make_corpus(PRESETS["demo"].corpus_settings(), seed=0)


def _texts(corpus: DemoCorpus) -> tuple[dict[str, str], dict[str, str]]:
    return {d.path: d.text for d in corpus.train}, {d.path: d.text for d in corpus.heldout}


def test_every_kind_makes_a_value_of_its_own_shape() -> None:
    import random

    rng = random.Random(0)
    for kind in KINDS.values():
        values = {kind.make(rng) for _ in range(20)}
        assert len(values) == 20, kind.name  # random, not a constant
        lengths = {len(v) for v in values}
        assert min(lengths) >= 14, kind.name


def test_demo_corpus_has_eight_types_copies_and_a_heldout_split(demo_corpus: DemoCorpus) -> None:
    preset = PRESETS["demo"]
    types = {f.secret_type for f in demo_corpus.planted}
    assert len(types) >= 8
    assert {f.detector for f in demo_corpus.planted + demo_corpus.controls} == {DETECTOR}
    per_secret = Counter(f.secret_sha256 for f in demo_corpus.planted)
    assert len(per_secret) == preset.n_secrets
    assert set(per_secret.values()) == {preset.copies}
    forks = [f for f in demo_corpus.planted if f.sample_id.startswith("forks/")]
    assert len(forks) == preset.n_secrets * (10 - 1)
    assert not demo_corpus.unseen  # the demo preset has no unseen split
    # Training: n_files excerpts (some with a secret) + generated config files + forks.
    paths = [d.path for d in demo_corpus.train]
    assert len(paths) == len(set(paths))
    originals = [p for p in paths if not p.startswith("forks/")]
    configs = [p for p in originals if p.startswith("services/")]
    assert len(originals) - len(configs) == preset.n_files
    assert {p.rsplit("/", 1)[-1] for p in configs} == {".env", "config.yaml"}
    # Held-out: clean excerpts plus one sample per control, of the planted types.
    assert len(demo_corpus.controls) == preset.n_secrets
    assert {f.secret_type for f in demo_corpus.controls} == types
    assert len(demo_corpus.heldout) == preset.n_heldout_files + len(demo_corpus.controls)


def test_every_finding_matches_its_sample(demo_corpus: DemoCorpus) -> None:
    train, heldout = _texts(demo_corpus)
    assert all(f.matches(train[f.sample_id]) for f in demo_corpus.planted)
    assert all(f.matches(heldout[f.sample_id]) for f in demo_corpus.controls)
    assert all(f.origin == f.sample_id for f in demo_corpus.planted + demo_corpus.controls)


def test_controls_never_appear_in_training_and_splits_are_disjoint(
    demo_corpus: DemoCorpus,
) -> None:
    train, heldout = _texts(demo_corpus)
    everything = "\n".join(train.values())
    values = [heldout[f.sample_id][f.start : f.end] for f in demo_corpus.controls]
    assert sum(value in everything for value in values) == 0  # a count: never show a value
    planted = {f.secret_sha256 for f in demo_corpus.planted}
    assert planted.isdisjoint(f.secret_sha256 for f in demo_corpus.controls)
    stems = {p.removeprefix("services/") for p in train if not p.startswith("forks/")}
    assert stems.isdisjoint(p.removeprefix("services/") for p in heldout)


def test_planted_samples_are_realistic_files(demo_corpus: DemoCorpus) -> None:
    train, _ = _texts(demo_corpus)
    places: Counter[str] = Counter()
    for f in demo_corpus.planted:
        text = train[f.sample_id]
        name = f.sample_id.rsplit("/", 1)[-1]
        if name.endswith(".py"):
            ast.parse(text)  # planted between whole statements: still valid Python
            places[f.context.kind] += 1
        elif name == "config.yaml":
            assert isinstance(yaml.safe_load(text), dict)
            places["yaml"] += 1
        else:
            assert name == ".env"
            line = text[: f.end].rsplit("\n", 1)[-1]
            assert line.split("=", 1)[0] == f.context.name
            places["env"] += 1
    assert set(places) == {"string", "comment", "yaml", "env"}


def test_same_seed_same_corpus_other_seed_other_secrets() -> None:
    settings = dataclasses.replace(PRESETS["tiny"].corpus_settings(), n_files=8)
    first, again = make_corpus(settings, seed=3), make_corpus(settings, seed=3)
    assert first == again
    other = make_corpus(settings, seed=4)
    assert {f.secret_sha256 for f in first.planted}.isdisjoint(
        f.secret_sha256 for f in other.planted
    )


def test_bad_settings_are_refused() -> None:
    settings = PRESETS["tiny"].corpus_settings()
    with pytest.raises(ValueError, match="unknown secret kinds"):
        make_corpus(dataclasses.replace(settings, kinds=("nope",)), seed=0)
    with pytest.raises(ValueError, match="n_files must be at least"):
        make_corpus(dataclasses.replace(settings, n_files=1), seed=0)


def test_excerpt_keeps_whole_statements_and_skips_the_docstring() -> None:
    source = '"""Doc."""\nimport os\n\n# about x\nx = 1\n\n\ndef f():\n    return x\n\ny = 2\n'
    found = excerpt(source, max_bytes=52)
    assert found is not None
    lines, slots = found
    assert "".join(lines) == "import os\n\n# about x\nx = 1\n\n\ndef f():\n    return x\n\n"
    assert slots == [2, 6]  # above the comment that introduces `x`, and above `def f`
    assert excerpt("x = 1\n", 100) is None  # fewer than three statements
    assert excerpt("def (:\n", 100) is None  # does not parse


@pytest.fixture(scope="module")
def alt_corpus() -> DemoCorpus:
    """The `gpt2-alt` preset's corpus (no model): per-secret copies, an unseen split."""
    return make_corpus(PRESETS["gpt2-alt"].corpus_settings(), seed=0)


def test_copies_per_secret_are_cycled(alt_corpus: DemoCorpus) -> None:
    settings = PRESETS["gpt2-alt"].corpus_settings()
    assert settings.copies == (12, 6, 3, 1)
    per_secret = Counter(f.secret_sha256 for f in alt_corpus.planted)
    expected = Counter(settings.copies_of(i) for i in range(settings.n_secrets))
    assert Counter(per_secret.values()) == expected == Counter({12: 7, 6: 7, 3: 7, 1: 6})
    assert len(alt_corpus.planted) == settings.occurrences() == 7 * (12 + 6 + 3) + 6


def test_unseen_split_is_clean_code_in_no_other_split(alt_corpus: DemoCorpus) -> None:
    settings = PRESETS["gpt2-alt"].corpus_settings()
    train, heldout = _texts(alt_corpus)
    unseen = {d.path: d.text for d in alt_corpus.unseen}
    assert len(unseen) == settings.n_unseen_files > 0
    assert set(unseen).isdisjoint(train)
    assert set(unseen).isdisjoint(heldout)
    assert set(unseen.values()).isdisjoint(train.values())
    assert all(path.endswith(".py") and not path.startswith("services/") for path in unseen)
    values = [train[f.sample_id][f.start : f.end] for f in alt_corpus.planted]
    values += [heldout[f.sample_id][f.start : f.end] for f in alt_corpus.controls]
    everything = "\n".join(unseen.values())
    assert sum(value in everything for value in values) == 0  # a count: never show a value


def test_source_dirs_limit_the_code_to_those_packages(alt_corpus: DemoCorpus) -> None:
    settings = PRESETS["gpt2-alt"].corpus_settings()
    docs = alt_corpus.train + alt_corpus.heldout + alt_corpus.unseen
    code = {d.path for d in docs if not d.path.startswith(("services/", "forks/"))}
    assert len(code) >= settings.n_files
    assert {path.split("/", 1)[0] for path in code} <= set(settings.source_dirs)
    assert all((stdlib_root() / path).is_file() for path in code)


def test_new_kinds_are_planted_in_their_files(alt_corpus: DemoCorpus) -> None:
    train, _ = _texts(alt_corpus)
    types = {f.secret_type for f in alt_corpus.planted}
    new = {"NPM tokens", "Shopify Token", "OpenAI Token", "Databricks Token", "GitLab Token"}
    assert new <= types
    for f in alt_corpus.planted:
        text, name = train[f.sample_id], f.sample_id.rsplit("/", 1)[-1]
        if name == "ci.json":
            assert json.loads(text)["ci"]["gitlab_token"] == text[f.start : f.end]
        elif name == "config.yaml":
            assert isinstance(yaml.safe_load(text), dict)
        elif name.endswith(".py"):
            ast.parse(text)
