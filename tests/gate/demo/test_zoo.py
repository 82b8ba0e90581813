"""The test-model presets beyond the demo: another GPT-2 and a Llama with a 49k vocabulary.

The default suite builds one shrunken Llama (a few steps: the layout, not memorization);
the whole presets, which take minutes, are built and checked with CODEERASER_ZOO=1.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from pathlib import Path

import pytest

from audit.corpus import CorpusSpec, iter_samples
from audit.findings import Finding, read_findings
from gate.demo.build import PRESETS, DemoBuild, build_demo


def _texts(path: Path) -> dict[str, str]:
    return {s.id: s.text for s in iter_samples(CorpusSpec(path))}


def _distinct(findings: list[Finding]) -> list[Finding]:
    return list({f.secret_sha256: f for f in findings}.values())


# `llama-49k` with its shape (49,152-row vocabulary, GQA) but few files and steps.
SMALL_LLAMA = dataclasses.replace(
    PRESETS["llama-49k"], n_files=4, n_secrets=3, copies=2, n_heldout_files=2,
    n_unseen_files=2, steps=12, warmup_steps=4,
)  # fmt: skip


@pytest.fixture(scope="module")
def small_llama(tmp_path_factory: pytest.TempPathFactory) -> DemoBuild:
    return build_demo(SMALL_LLAMA, cache_dir=tmp_path_factory.mktemp("zoo-cache"), seed=0)


def test_llama_preset_has_a_real_vocabulary_shape(small_llama: DemoBuild) -> None:
    """A LlamaForCausalLM with 49,152 embedding rows and tied output, a 1,024-token
    tokenizer, loaded by the gate's own loader like any hub model."""
    from transformers import LlamaForCausalLM

    from audit.model import load_model

    loaded = load_model(small_llama.model_dir)
    model = loaded.model
    assert isinstance(model, LlamaForCausalLM)
    config, embeddings = model.config, model.model.embed_tokens
    assert config.vocab_size == embeddings.num_embeddings == 49152
    assert model.lm_head.weight.data_ptr() == embeddings.weight.data_ptr()  # tied, as in SmolLM2
    # the BPE stops early on this small corpus; the whole preset's has 1,024 tokens
    assert 256 < len(loaded.tokenizer) <= small_llama.preset.vocab_size == 1024
    assert (config.num_attention_heads, config.num_key_value_heads) == (4, 2)
    assert loaded.context_length == small_llama.preset.n_ctx


def test_unseen_split_is_written_beside_the_heldout_one(small_llama: DemoBuild) -> None:
    assert small_llama.unseen_dir is not None
    assert small_llama.unseen_jsonl is not None
    unseen = _texts(small_llama.unseen_dir)
    assert unseen == _texts(small_llama.unseen_jsonl)
    assert len(unseen) == small_llama.preset.n_unseen_files
    assert set(unseen).isdisjoint(_texts(small_llama.corpus_dir))
    assert set(unseen).isdisjoint(_texts(small_llama.heldout_dir))


def test_a_preset_without_unseen_code_has_no_unseen_paths(tiny_demo: DemoBuild) -> None:
    assert tiny_demo.unseen_dir is None
    assert tiny_demo.unseen_jsonl is None
    assert not (tiny_demo.root / "unseen").exists()


def test_llama_build_is_deterministic(small_llama: DemoBuild, tmp_path: Path) -> None:
    """The same preset and seed, built again, gives the same weights and figures."""
    from safetensors.torch import load_file

    again = build_demo(SMALL_LLAMA, cache_dir=tmp_path, seed=0)
    assert not again.cached
    first = load_file(small_llama.model_dir / "model.safetensors")
    second = load_file(again.model_dir / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(first[k].equal(second[k]) for k in first)
    keep = ("planted_ma", "planted_extracted", "controls_ma", "final_loss", "parameters")
    assert [getattr(again.figures, k) for k in keep] == [
        getattr(small_llama.figures, k) for k in keep
    ]


def test_zoo_presets_differ_from_the_demo() -> None:
    """Issue 13's "beyond the demo": other code, kinds, copies, shapes."""
    base = PRESETS["demo"]
    for name in ("gpt2-alt", "llama-49k"):
        preset = PRESETS[name]
        assert preset.n_unseen_files > 0, name
        assert not set(preset.kinds) >= set(base.kinds), name
        assert preset.n_ctx != base.n_ctx or preset.arch != base.arch, name
    alt = PRESETS["gpt2-alt"]
    assert (alt.n_layer, alt.source_dirs != (), isinstance(alt.copies, tuple)) == (3, True, True)
    assert (PRESETS["llama-49k"].arch, PRESETS["llama-49k"].embedding_rows) == ("llama", 49152)


# --- whole presets (opt-in) -----------------------------------------------------------


@pytest.mark.zoo
@pytest.mark.parametrize("name", ["gpt2-alt", "llama-49k"])
def test_zoo_model_reproduces_planted_secrets_but_not_controls(name: str) -> None:
    """Each whole preset, built (or reused) in the user cache and measured from its files:
    secrets with many copies come back verbatim, none of the controls does, and the
    training loss is far below a uniform guess over the vocabulary (the fail-closed
    load probe's condition)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gate.demo.train import quick_eval

    build = build_demo(name, seed=0)
    model = AutoModelForCausalLM.from_pretrained(build.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(build.model_dir)
    train, heldout = _texts(build.corpus_dir), _texts(build.heldout_dir)
    planted = read_findings(build.planted)
    copies = Counter(f.secret_sha256 for f in planted)
    distinct = _distinct(planted)
    results = quick_eval(model, tokenizer, [(f, train[f.sample_id]) for f in distinct])
    controls = [(f, heldout[f.sample_id]) for f in read_findings(build.controls)]
    assert not any(r.extracted for r in quick_eval(model, tokenizer, controls))
    many = [r for r, f in zip(results, distinct, strict=True) if copies[f.secret_sha256] >= 6]
    assert sum(r.extracted for r in many) >= 0.8 * len(many)
    assert build.figures.planted_extracted == sum(r.extracted for r in results)
    assert build.figures.final_loss < 0.1 * math.log(model.config.vocab_size)
    manifest = json.loads(build.manifest.read_text())
    assert manifest["preset"]["name"] == name
