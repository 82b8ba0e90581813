"""Batched, KV-cached decoding over left-padded rows: our own loop over ``model(...)``.

We do not use ``generate``: every row needs a different number of tokens, nothing stops
at EOS, only the last position's logits are computed, rows leave the batch (and the
cache) as soon as they are done, and a batch can start from a cache gathered out of an
earlier pass instead of a prefill. Rows are left-padded with an attention mask and the
position ids the unpadded row would have, so a batched row decodes exactly what it
would decode alone (tests/audit/test_decoding.py checks it against uncached decoding).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers.cache_utils import DynamicLayer

from audit.model import forward, model_device, new_cache

Chooser = Callable[["torch.Tensor"], "torch.Tensor"]  # (B, V) logits -> (B,) token ids
# Finished rows leave the batch once they are 1/8 of it: dropping them copies the whole
# cache, so doing it at every step (calibration rows finish one by one) costs more than
# the few wasted rows.
_SHRINK = 8 / 7


def argmax(logits: torch.Tensor) -> torch.Tensor:
    """Greedy choice; ties go to the lowest token id."""
    return logits.argmax(dim=-1)  # (B,)


def left_pad(
    seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ids, attention mask and the positions the unpadded rows would have."""

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, L)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)  # (B, L)
    for r, seq in enumerate(seqs):
        ids[r, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[r, width - len(seq) :] = 1
    positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)  # (B, L)
    return ids.to(device), mask.to(device), positions.to(device)


def decode_batch(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    steps: Sequence[int],
    *,
    pad_id: int,
    context_length: int,
    choose: Chooser = argmax,
) -> list[list[int]]:
    """Decode steps[r] tokens after prompts[r] for every row: one prefill, then the cache.

    Rows sorted by decreasing steps leave the batch as soon as they are done. Prompt +
    steps must fit the context.
    """
    ids, mask, positions = left_pad(prompts, pad_id, model_device(model))
    cache = new_cache(model)
    logits = forward(model, ids, mask, positions, cache=cache, keep=1)[:, -1, :]  # (B, V)
    first = choose(logits)  # (B,)
    return continue_decoding(
        model,
        cache,
        mask,
        positions[:, -1:] + 1,
        first,
        steps=steps,
        context_length=context_length,
        choose=choose,
    )


def continue_decoding(
    model: torch.nn.Module,
    cache: Any,
    mask: torch.Tensor,
    positions: torch.Tensor,
    first: torch.Tensor,
    *,
    steps: Sequence[int],
    context_length: int,
    choose: Chooser = argmax,
) -> list[list[int]]:
    """Decode the rest of each row, given its cache, mask (B, L), the position of its
    first new token (B, 1) and that token (B,): steps[r] tokens in all."""

    ordered = all(a >= b for a, b in itertools.pairwise(steps))
    can_shrink = ordered and hasattr(cache, "batch_select_indices")
    out = torch.zeros((len(steps), max(steps)), dtype=torch.long)  # (B, S)
    out[:, 0] = first.cpu()
    active = len(steps)
    for step in range(1, max(steps)):
        still = sum(1 for s in steps[:active] if s > step) if can_shrink else active
        if still == 0:
            break
        if still * _SHRINK < active:  # enough rows at the end are done: drop them
            cache.batch_select_indices(torch.arange(still, device=mask.device))
            mask, positions, active = mask[:still], positions[:still], still
            choose = _narrowed(choose, still)
        ids = out[:active, step - 1 : step].to(mask.device)  # (b, 1)
        mask = torch.cat([mask, mask.new_ones((active, 1))], dim=1)  # (b, L+step)
        where = positions.clamp(max=context_length - 1)  # only rows already done can pass it
        logits = forward(model, ids, mask, where, cache=cache, keep=1)[:, -1, :]  # (b, V)
        out[:active, step] = choose(logits).cpu()
        positions = positions + 1
    return [out[r, : steps[r]].tolist() for r in range(len(steps))]


def _narrowed(choose: Chooser, rows: int) -> Chooser:
    narrow = getattr(choose, "narrow", None)
    return narrow(rows) if callable(narrow) else choose


# --- starting from a cache computed earlier -------------------------------------------


def gatherable(cache: Any) -> bool:
    """Whether rows can be cut out of this cache: every layer keeps every position."""

    layers = getattr(cache, "layers", None)
    if not isinstance(layers, list) or not layers:
        return False
    for layer in layers:
        keys = getattr(layer, "keys", None)
        if type(layer) is not DynamicLayer or keys is None or keys.dim() != 4:
            return False
    return True


def gather_cache(
    model: torch.nn.Module,
    cache: Any,
    rows: torch.Tensor,
    starts: torch.Tensor,
    lengths: torch.Tensor,
) -> tuple[Any, torch.Tensor]:
    """A new cache whose row r holds positions [starts[r], starts[r] + lengths[r]) of the
    source cache's row rows[r], left-padded; and its attention mask (R, W).

    The keys already carry their positions (rotary or learned), which stay the ones
    the rows had in the source pass: 0..length-1 from each row's first real token.
    """
    sources = torch.zeros_like(rows)
    return gather_caches(model, [cache], sources=sources, rows=rows, starts=starts, lengths=lengths)


def gather_caches(
    model: torch.nn.Module,
    caches: Sequence[Any],
    *,
    sources: torch.Tensor,
    rows: torch.Tensor,
    starts: torch.Tensor,
    lengths: torch.Tensor,
) -> tuple[Any, torch.Tensor]:
    """`gather_cache` over several source caches (passes over other rows, of other
    widths): row r is cut out of caches[sources[r]]. Each row holds the same values as
    if it had been cut out of its own cache alone."""

    width = int(lengths.max())
    offset = torch.arange(width, device=rows.device)[None, :] - (width - lengths[:, None])  # (R, W)
    mask = (offset >= 0).long()  # (R, W)
    positions = starts[:, None] + offset.clamp(min=0)  # (R, W) in each row's source
    picks = [(sources == c).nonzero().squeeze(1) for c in range(len(caches))]  # rows per source
    gathered = new_cache(model)
    for index in range(len(caches[0].layers)):
        layers = [cache.layers[index] for cache in caches]
        keys = _gather_layer([layer.keys for layer in layers], picks, rows, positions)
        values = _gather_layer([layer.values for layer in layers], picks, rows, positions)
        gathered.update(keys, values, index)
    return gathered, mask


def _gather_layer(
    sources: Sequence[torch.Tensor],
    picks: Sequence[torch.Tensor],
    rows: torch.Tensor,
    positions: torch.Tensor,
) -> torch.Tensor:
    """(R, H, W, D): row r is sources[c][rows[r], :, positions[r], :] for the c whose
    picks hold r (positions past a source's end are clamped: they are masked out)."""
    first = sources[0]
    heads, dim = first.shape[1], first.shape[3]
    out = first.new_empty((len(rows), positions.shape[1], heads, dim))  # (R, W, H, D)
    for source, pick in zip(sources, picks, strict=True):
        if len(pick):
            where = positions[pick].clamp(max=source.shape[2] - 1)  # (n, W)
            out[pick] = source[rows[pick][:, None], :, where, :]  # (n, W, H, D)
    return out.transpose(1, 2).contiguous()  # (R, H, W, D)


# --- sampling -------------------------------------------------------------------------


def row_seed(seed: int, key: str, draw: int) -> int:
    """A 63-bit seed for one sampled row, from the run seed, a row key and a draw number."""
    digest = hashlib.sha256(f"{seed}\0{key}\0{draw}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class GumbelChooser:
    """Temperature/top-k sampling by the Gumbel-max trick, one generator per row.

    Each row draws from its own generator, so what a row samples does not depend on
    the other rows in its batch.
    """

    def __init__(self, generators: list[Any], temperature: float, top_k: int) -> None:
        self.generators = generators
        self.temperature = temperature
        self.top_k = top_k

    @classmethod
    def seeded(
        cls, seeds: Sequence[int], temperature: float, top_k: int, device: torch.device
    ) -> GumbelChooser:

        generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        return cls(generators, temperature, top_k)

    def narrow(self, rows: int) -> GumbelChooser:
        return GumbelChooser(self.generators[:rows], self.temperature, self.top_k)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:

        scores = logits.float() / self.temperature  # (B, V)
        index = None
        if 0 < self.top_k < scores.shape[-1]:
            scores, index = scores.topk(self.top_k, dim=-1)  # (B, k)
        width = scores.shape[-1]
        uniform = torch.stack(
            [torch.rand(width, generator=g, device=scores.device) for g in self.generators]
        )  # (B, k)
        pick = (scores - torch.log(-torch.log(uniform))).argmax(dim=-1)  # (B,)
        return pick if index is None else index.gather(-1, pick[:, None]).squeeze(-1)
