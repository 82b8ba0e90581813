from __future__ import annotations

from typing import Any

import pytest
import torch

from audit.decoding import (
    GumbelChooser,
    continue_decoding,
    decode_batch,
    gather_cache,
    gather_caches,
    gatherable,
    left_pad,
    row_seed,
)
from audit.model import forward, new_cache
from tests.audit import tiny_lm
from tests.audit.tiny_lm import slow_greedy

KINDS = ("gpt2", "llama")


def prompts() -> list[tuple[int, ...]]:
    code = tiny_lm.tokenizer()(tiny_lm.CODE, add_special_tokens=False)["input_ids"]
    return [tuple(code[s : s + n]) for s, n in ((0, 1), (3, 9), (10, 40), (60, 17), (100, 25))]


def test_left_pad_gives_unpadded_positions() -> None:
    ids, mask, positions = left_pad([(5, 6, 7), (8,)], pad_id=0, device=torch.device("cpu"))
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions.tolist() == [[0, 1, 2], [0, 0, 0]]


@pytest.mark.parametrize("kind", KINDS)
def test_decode_batch_equals_uncached_greedy(kind: str) -> None:
    model = tiny_lm.model(kind)
    rows = sorted(((p, 30 - len(p) // 3) for p in prompts()), key=lambda r: -r[1])
    fast = decode_batch(
        model, [r[0] for r in rows], [r[1] for r in rows], pad_id=0, context_length=128
    )
    assert fast == [slow_greedy(model, p, s) for p, s in rows]
    # rows not sorted by steps cannot leave the batch early; the result is the same
    unsorted = rows[::-1]
    again = decode_batch(
        model, [r[0] for r in unsorted], [r[1] for r in unsorted], pad_id=0, context_length=128
    )
    assert again == fast[::-1]


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_a_cache_cut_out_of_a_longer_pass_decodes_like_a_prefill(kind: str) -> None:
    model: Any = tiny_lm.model(kind)
    full = prompts()[1:]
    ids, mask, positions = left_pad(full, 0, torch.device("cpu"))
    cache = new_cache(model)
    forward(model, ids, mask, positions, cache=cache)
    assert gatherable(cache)
    # row r keeps its first n tokens: the prompt of a shorter decode
    cuts = [(0, 5), (1, 33), (3, 1), (1, 17), (2, 17)]
    rows = torch.tensor([r for r, _ in cuts])
    lengths = torch.tensor([n for _, n in cuts])
    starts = torch.tensor([ids.shape[1] - len(full[r]) for r, _ in cuts])
    gathered, gmask = gather_cache(model, cache, rows, starts, lengths)
    heads = [full[r][:n] for r, n in cuts]
    first = torch.tensor([slow_greedy(model, h, 1)[0] for h in heads])
    steps = [12, 12, 9, 4, 3]
    got = continue_decoding(
        model, gathered, gmask, lengths[:, None], first, steps=steps, context_length=128
    )
    assert got == [slow_greedy(model, h, s) for h, s in zip(heads, steps, strict=True)]


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_rows_cut_out_of_several_passes_equal_rows_cut_out_of_each_alone(kind: str) -> None:
    """Passes of different widths (two groups of prompts): a row gathered together with
    rows of the other pass holds the same keys and values as gathered alone."""
    model: Any = tiny_lm.model(kind)
    groups = [prompts()[:2], prompts()[2:]]
    caches, widths = [], []
    for group in groups:
        ids, mask, positions = left_pad(group, 0, torch.device("cpu"))
        cache = new_cache(model)
        forward(model, ids, mask, positions, cache=cache)
        caches.append(cache)
        widths.append(ids.shape[1])
    cuts = [(1, 0, 30), (0, 1, 4), (1, 2, 25), (0, 0, 1), (1, 1, 9)]  # (pass, row, length)
    sources, rows, lengths = (torch.tensor(column) for column in zip(*cuts, strict=True))
    starts = torch.tensor([widths[p] - len(groups[p][r]) for p, r, _ in cuts])
    together, mask = gather_caches(
        model, caches, sources=sources, rows=rows, starts=starts, lengths=lengths
    )
    width = int(lengths.max())
    for out, (p, r, n) in enumerate(cuts):
        alone, alone_mask = gather_cache(
            model, caches[p], torch.tensor([r]), starts[out : out + 1], torch.tensor([n])
        )
        assert mask[out, width - n :].tolist() == alone_mask[0].tolist()
        assert not mask[out, : width - n].any()
        for mixed, single in zip(together.layers, alone.layers, strict=True):
            assert torch.equal(mixed.keys[out, :, width - n :], single.keys[0])
            assert torch.equal(mixed.values[out, :, width - n :], single.values[0])


def test_gumbel_sampling_is_per_row_and_top_1_is_greedy() -> None:
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    seeds = [row_seed(1, "f", k) for k in range(3)]
    one = GumbelChooser.seeded(seeds, 1.0, 0, torch.device("cpu"))(logits)
    alone = GumbelChooser.seeded(seeds[1:2], 1.0, 0, torch.device("cpu"))(logits[1:2])
    assert int(one[1]) == int(alone[0])  # a row draws the same whatever its batch
    top1 = GumbelChooser.seeded(seeds, 5.0, 1, torch.device("cpu"))(logits)
    assert top1.tolist() == logits.argmax(-1).tolist()
    draws = {
        int(GumbelChooser.seeded([row_seed(s, "f", 0)], 1.0, 0, torch.device("cpu"))(logits[:1]))
        for s in range(30)
    }
    assert len(draws) > 3  # different seeds sample different tokens
