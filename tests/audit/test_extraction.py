"""Equivalence tests (minGPT style): the batched, cached, one-pass code against slow,
obviously-correct per-position and per-prefix loops on tiny GPT-2 and Llama models."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import extraction, metrics
from audit.corpus import CorpusSpec, load_texts
from audit.errors import InputError
from audit.extraction import (
    MeasureConfig,
    ProbeScores,
    extraction_likelihoods,
    measure_probes,
    memorization_accuracies,
    score_probes,
)
from audit.findings import read_findings
from audit.measurements import Thresholds
from audit.model import LOGIT_BUDGET, LoadedModel, load_model, vocab_of
from audit.probes import Probe, build_probes
from tests.audit import tiny_lm
from tests.audit.tiny_lm import slow_greedy, slow_ma_hits

KINDS = ("gpt2", "llama")


def make_probes(model: Any) -> list[Probe]:
    """Probes whose secrets are partly the model's own greedy continuation, so that MA and
    EL land strictly between 0 and 1; prefix lengths 1..60, secrets of 2..20 tokens."""
    tok = tiny_lm.tokenizer()
    code = tok(tiny_lm.CODE, add_special_tokens=False)["input_ids"]
    probes = []
    for k, (start, p, m, keep) in enumerate(
        [(0, 1, 2, 2), (5, 7, 5, 3), (20, 30, 12, 8), (40, 60, 20, 14), (90, 25, 9, 9)]
    ):
        prefix = tuple(code[start : start + p])
        own = slow_greedy(model, prefix, keep)
        filler = code[start + p : start + p + m - keep]
        secret = tuple(own + filler)
        probes.append(
            Probe(
                finding_id=f"f{k}",
                sample_id="s",
                secret_type="test",
                prefix_ids=prefix,
                secret_ids=secret,
                truncated=False,
                secret=tiny_lm.decode(secret),
            )
        )
    return probes


@pytest.fixture(scope="module", params=KINDS)
def setup(request: pytest.FixtureRequest) -> tuple[Any, list[Probe]]:
    model = tiny_lm.model(request.param)
    return model, make_probes(model)


def test_one_pass_ma_equals_per_position_ma(setup: tuple[Any, list[Probe]]) -> None:
    model, probes = setup
    scores = score_probes(model, tiny_lm.tokenizer(), probes, MeasureConfig(extraction=False))
    for probe, score in zip(probes, scores, strict=True):
        slow = slow_ma_hits(model, probe)
        assert score.ma == sum(slow) / len(slow), probe.finding_id
    mas = [s.ma for s in scores]
    assert any(0 < ma < 1 for ma in mas), mas  # the test exercises mixed hits and misses


def test_batched_el_equals_unbatched_el(setup: tuple[Any, list[Probe]]) -> None:
    # (the prefill path, reuse_cache=False, is checked equal to this one below)
    model, probes = setup
    config = MeasureConfig(extraction=False)
    scores = score_probes(model, tiny_lm.tokenizer(), probes, config)
    seen = set()
    for probe, score in zip(probes, scores, strict=True):
        decodes = {
            i: slow_greedy(model, probe.prefix_ids + probe.secret_ids[:i], probe.m - i)
            for i in metrics.el_offsets(probe.m, (3, 5, 10))
        }
        for n in (3, 5, 10):
            slow = metrics.extraction_likelihood(probe.secret_ids, decodes, n)
            assert score.el[n] == slow, (probe.finding_id, n)
            seen.add(round(slow, 6))
    assert len(seen) > 3  # EL takes several distinct values here, not all 0 or 1


def test_results_do_not_depend_on_batch_size(setup: tuple[Any, list[Probe]]) -> None:
    model, probes = setup
    config = MeasureConfig(samples=2, temperature=1.5, top_k=20, seed=7)
    runs = [
        score_probes(model, tiny_lm.tokenizer(), probes, replace(config, batch_tokens=budget))
        for budget in (120, 1_000_000)  # about one finding per batch; all in one batch
    ]
    assert runs[0] == runs[1]
    prefilled = replace(config, reuse_cache=False)
    assert score_probes(model, tiny_lm.tokenizer(), probes, prefilled) == runs[0]
    reordered = score_probes(model, tiny_lm.tokenizer(), probes[::-1], config)
    assert reordered[::-1] == runs[0]


@pytest.mark.parametrize("budget", [1, 3 * 320, 1 << 24])  # 1 position, 3, all (V = 320)
def test_results_do_not_depend_on_the_output_layer_chunks(
    setup: tuple[Any, list[Probe]], budget: int
) -> None:
    """The output layer a chunk of positions at a time (and decode batches of at most
    budget / V rows) against the model's own whole logits (no split head): the same."""
    model, probes = setup
    config = MeasureConfig(samples=2, temperature=1.5, top_k=20, seed=7, batch_tokens=300)
    with patch("audit.model.split_head", return_value=None):
        whole = score_probes(model, tiny_lm.tokenizer(), probes, config)
    with patch("audit.model.LOGIT_BUDGET", budget), patch("audit.extraction.LOGIT_BUDGET", budget):
        chunked = score_probes(model, tiny_lm.tokenizer(), probes, config)
    assert chunked == whole


def test_extraction_and_leaked_prefix_match_a_slow_greedy_decode(
    setup: tuple[Any, list[Probe]],
) -> None:
    model, probes = setup
    tok = tiny_lm.tokenizer()
    # Secrets that are exactly the model's greedy continuation are extracted in full.
    own = [replace(p, secret_ids=tuple(slow_greedy(model, p.prefix_ids, p.m))) for p in probes]
    own = [replace(p, secret=tiny_lm.decode(p.secret_ids)) for p in own]
    config = MeasureConfig(decode_margin=4)
    for probe, score in zip(own, score_probes(model, tok, own, config), strict=True):
        assert score.extracted_greedy, probe.finding_id
        assert score.longest_leaked_prefix == len(probe.secret)
        assert score.ma == 1.0
        assert score.el[3] == 1.0
    for probe, score in zip(probes, score_probes(model, tok, probes, config), strict=True):
        text = tiny_lm.decode(slow_greedy(model, probe.prefix_ids, probe.m + 4))
        assert score.extracted_greedy == (probe.secret in text)
        assert score.longest_leaked_prefix == metrics.leaked_prefix_chars(text, "", probe.secret)


def test_top_1_sampling_is_greedy_and_sampling_is_seeded(setup: tuple[Any, list[Probe]]) -> None:
    model, probes = setup
    tok = tiny_lm.tokenizer()
    own = [replace(p, secret_ids=tuple(slow_greedy(model, p.prefix_ids, p.m))) for p in probes]
    own = [replace(p, secret=tiny_lm.decode(p.secret_ids)) for p in own]
    top1 = score_probes(model, tok, own, MeasureConfig(samples=2, top_k=1))
    assert all(s.extracted_sampled and s.samples == 2 for s in top1)
    hot = MeasureConfig(samples=4, temperature=50.0, top_k=0, seed=1)
    first = score_probes(model, tok, own, hot)
    assert first == score_probes(model, tok, own, hot)
    # At a very high temperature over the whole vocabulary, long secrets are not drawn.
    assert not any(s.extracted_sampled for p, s in zip(own, first, strict=True) if p.m >= 9)


def test_copies_are_scored_once_and_share_their_scores(
    setup: tuple[Any, list[Probe]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from audit import extraction

    model, probes = setup
    tok = tiny_lm.tokenizer()
    config = MeasureConfig(samples=2, temperature=2.0, seed=3)
    alone = score_probes(model, tok, probes, config)
    copies = [replace(p, finding_id=f"{p.finding_id}-copy") for p in probes]
    scored: list[int] = []
    real = extraction._score_distinct

    def counting(*args: Any, **kwargs: Any) -> Any:
        scored.append(len(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(extraction, "_score_distinct", counting)
    both = score_probes(model, tok, [*copies, *probes], config)
    assert scored == [len(probes)]
    assert [s.finding_id for s in both] == [p.finding_id for p in [*copies, *probes]]
    # The group is seeded by its smallest finding id (the original), whatever the order.
    assert both[len(probes) :] == alone
    assert [replace(s, finding_id="") for s in both[: len(probes)]] == [
        replace(s, finding_id="") for s in alone
    ]


def test_measure_probes_applies_thresholds_and_restores_training_mode() -> None:
    model = tiny_lm.gpt2()
    probes = make_probes(model)
    model.train()
    try:
        low = measure_probes(model, tiny_lm.tokenizer(), probes, Thresholds(0.0, 2.0, "test"))
        assert model.training
    finally:
        model.train(False)
    high = measure_probes(model, tiny_lm.tokenizer(), probes, Thresholds(1.01, 1.01, "test"))
    assert all(m.memorized for m in low)
    assert not any(m.memorized for m in high)
    assert [m.ma for m in low] == [m.ma for m in high]
    row = low[3]
    assert (row.secret_tokens, row.prefix_tokens, row.samples) == (20, 60, 0)
    assert row.extracted_sampled is None


def test_partial_measures_agree_with_the_full_one() -> None:
    model, tok = tiny_lm.gpt2(), tiny_lm.tokenizer()
    probes = make_probes(model)
    full = score_probes(model, tok, probes)
    only10 = score_probes(model, tok, probes, MeasureConfig(el_ns=(10,)))
    assert [s.el[10] for s in only10] == [s.el[10] for s in full]
    assert all(set(s.el) == {10} for s in only10)
    assert memorization_accuracies(model, tok, probes) == [s.ma for s in full]
    els = extraction_likelihoods(model, tok, probes, MeasureConfig(el_ns=(5, 10)))
    assert els == [{5: s.el[5], 10: s.el[10]} for s in full]
    assert score_probes(model, tok, []) == []
    assert memorization_accuracies(model, tok, []) == []


@pytest.mark.parametrize(
    "kwargs",
    [{"batch_tokens": 0}, {"temperature": 0.0}, {"el_ns": ()}, {"samples": -1}, {"top_k": -2}],
)
def test_bad_config_is_an_input_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        MeasureConfig(**kwargs)


def test_probe_scores_hold_no_secret() -> None:
    model = tiny_lm.gpt2()
    probes = make_probes(model)
    for probe, score in zip(probes, score_probes(model, tiny_lm.tokenizer(), probes), strict=True):
        assert isinstance(score, ProbeScores)
        if len(probe.secret) >= 8:  # long enough not to occur in a repr by chance
            assert probe.secret not in repr(score)
            assert probe.secret not in repr(probe)


# --- decoding the rows of several passes together ------------------------------------

CODE_IDS = tiny_lm.tokenizer()(tiny_lm.CODE, add_special_tokens=False)["input_ids"]
SHAPES = st.lists(  # (start in the code, prefix tokens, secret tokens) per probe
    st.tuples(st.integers(0, 150), st.integers(1, 45), st.integers(1, 24)), min_size=1, max_size=9
)


def random_probes(shapes: list[tuple[int, int, int]]) -> list[Probe]:
    probes = []
    for k, (start, p, m) in enumerate(shapes):
        prefix, secret = CODE_IDS[start : start + p], CODE_IDS[start + p : start + p + m]
        probes.append(
            Probe(f"f{k}", "s", "test", tuple(prefix), tuple(secret), False, tiny_lm.decode(secret))
        )
    return probes


def greedy_decodes(model: Any, probes: list[Probe], config: MeasureConfig) -> Any:
    """MA hits and every greedy row's decode, as the measure computes them."""
    with torch.no_grad():
        return extraction._ma_and_greedy(model, probes, 0, config, extraction._Tracker(None))


@settings(max_examples=12, deadline=None)
@given(
    st.sampled_from(KINDS),
    SHAPES,
    st.integers(8, 4000),
    st.booleans(),
    st.sampled_from([1, 3 * 320, LOGIT_BUDGET]),
)
def test_rows_of_several_passes_decode_like_each_pass_alone(
    kind: str, shapes: list[tuple[int, int, int]], tokens: int, reuse: bool, logits: int
) -> None:
    """The greedy rows of a group of passes decoded together (batches that mix passes,
    cut by the token and logit budgets) give the same tokens as each pass's rows decoded
    on their own, as the measure did before; random probe shapes, budgets and cache
    reuse (the prefill path), on GPT-2 and Llama."""
    model, probes = tiny_lm.model(kind), random_probes(shapes)
    config = MeasureConfig(batch_tokens=tokens, reuse_cache=reuse)
    with patch("audit.extraction.LOGIT_BUDGET", logits):
        merged = greedy_decodes(model, probes, config)
        with patch.object(extraction, "_pass_groups", lambda chunks, *_: ([c] for c in chunks)):
            alone = greedy_decodes(model, probes, config)
    assert merged == alone
    assert set(merged[1]) == {
        (j, i) for j, p in enumerate(probes) for i in metrics.el_offsets(p.m, config.el_ns)
    }


@settings(max_examples=60, deadline=None)
@given(SHAPES, st.integers(1, 3000))
def test_pass_groups_hold_each_chunk_once_within_half_the_budget(
    shapes: list[tuple[int, int, int]], tokens: int
) -> None:
    probes = random_probes(shapes)
    chunks = list(extraction._probe_chunks(probes, tokens))
    groups = list(extraction._pass_groups(chunks, probes, tokens))
    assert [c for group in groups for c in group] == chunks  # every chunk once, in order

    def held(group: list[list[int]]) -> int:  # tokens of the group's passes
        return sum(len(c) * max(len(probes[j].prefix_ids) + probes[j].m for j in c) for c in group)

    for group in groups:
        assert held(group) <= tokens or len(group) == 1  # a lone chunk may be over (one probe)
    for one, two in itertools.pairwise(groups):  # cut only where the next chunk overflows
        assert held([*one, two[0]]) > tokens


def test_merged_decode_batches_stay_within_the_budgets() -> None:
    """Each decode batch cut out of a group of passes holds rows × (longest prompt +
    steps) ≤ the tokens the passes leave, and at most LOGIT_BUDGET / V rows; and the
    rows of several passes do share batches."""
    model = tiny_lm.model("llama")
    probes = random_probes([(s, 5 + 7 * s % 30, 3 + s % 17) for s in range(0, 140, 11)])
    config = MeasureConfig(batch_tokens=2400)
    seen: list[tuple[int, int, int]] = []  # (rows, longest prompt, most steps)
    real = extraction._batches

    def spying(rows: Any, budget: int, most: int = 0) -> Any:
        for batch in real(rows, budget, most):
            longest = max(len(r.prompt) for r in batch) + max(r.steps for r in batch)
            assert len(batch) * longest <= budget or len(batch) == 1
            assert len(batch) <= max(1, LOGIT_BUDGET // vocab_of(model))
            assert budget <= config.batch_tokens
            seen.append((len(batch), len({r.key[0] for r in batch}), longest))
            yield batch

    with patch.object(extraction, "_batches", spying):
        greedy_decodes(model, probes, config)
    chunks = list(extraction._probe_chunks(probes, config.batch_tokens // 2))
    assert len(chunks) > 2  # several passes ...
    assert len(seen) < len(chunks)  # ... whose rows share fewer decode batches
    assert max(probes_in for _, probes_in, _ in seen) > max(len(c) for c in chunks)


# --- on the tiny demo model (a GPT-2 that memorized its planted secrets) --------------


def demo_probes(loaded: LoadedModel, findings_file: Path, data: Path) -> list[Probe]:
    """One probe per distinct secret (the first occurrence of each)."""
    findings, seen = [], set()
    for finding in read_findings(findings_file):
        if finding.secret_sha256 not in seen:
            seen.add(finding.secret_sha256)
            findings.append(finding)
    texts = load_texts(CorpusSpec(data), {f.sample_id for f in findings})
    return build_probes(findings, texts, loaded.tokenizer, context_length=loaded.context_length)


def test_planted_secrets_are_extractable_and_controls_are_not(tiny_demo: Any) -> None:
    loaded = load_model(tiny_demo.model_dir, device="cpu")
    planted = demo_probes(loaded, tiny_demo.planted, tiny_demo.corpus_dir)
    controls = demo_probes(loaded, tiny_demo.controls, tiny_demo.heldout_dir)
    thresholds = Thresholds(0.4557, 0.0549, "paper:codeparrot-small")
    config = MeasureConfig(samples=2, seed=0)
    got = measure_probes(loaded.model, loaded.tokenizer, planted, thresholds, config)
    ctl = measure_probes(loaded.model, loaded.tokenizer, controls, thresholds, config)
    mean_ma = sum(m.ma for m in got) / len(got)
    control_ma = sum(m.ma for m in ctl) / len(ctl)
    assert len(got) >= 4
    assert len(ctl) >= 4
    assert mean_ma >= 0.9, [round(m.ma, 3) for m in got]
    assert sum(m.extracted_greedy for m in got) > len(got) / 2  # mostly extracted
    assert all(m.memorized for m in got)
    assert not any(m.extracted_greedy or m.extracted_sampled for m in ctl)
    assert control_ma <= 0.3, [round(m.ma, 3) for m in ctl]
    assert mean_ma - control_ma >= 0.6
    assert max(m.el_10 for m in ctl) < min(m.el_10 for m in got)


def test_one_pass_ma_and_batched_el_are_exact_on_the_demo_model(tiny_demo: Any) -> None:
    loaded = load_model(tiny_demo.model_dir, device="cpu")
    probes = (
        demo_probes(loaded, tiny_demo.planted, tiny_demo.corpus_dir)[:2]
        + demo_probes(loaded, tiny_demo.controls, tiny_demo.heldout_dir)[:2]
    )
    model = loaded.model
    scores = score_probes(model, loaded.tokenizer, probes, MeasureConfig(el_ns=(10,)))
    for probe, score in zip(probes, scores, strict=True):
        slow = slow_ma_hits(model, probe)
        assert score.ma == sum(slow) / len(slow)
    for probe, score in list(zip(probes, scores, strict=True))[1:3]:  # a planted, a control
        decodes = {
            i: slow_greedy(model, probe.prefix_ids + probe.secret_ids[:i], probe.m - i)
            for i in metrics.el_offsets(probe.m, (10,))
        }
        assert score.el[10] == metrics.extraction_likelihood(probe.secret_ids, decodes, 10)
