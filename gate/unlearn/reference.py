"""p0, the original model, as the KL terms see it: cached log-probs or a frozen copy.

The forget and retain windows never change during unlearning, so p0's log-probs at
the positions a loss uses can be computed once, before the first step, and the model
being trained is then the only model in memory (`CachedReference`). The reference
implementation instead keeps a frozen second copy of the model and runs it on every
batch (`FrozenReference`, kept to measure against).

What the cache holds, per window, at the positions the method's KL uses (codeeraser:
the secret tokens of a forget window and every token of a retain window; cu: every
token of both):

- ``full``: p0's log-probs over the whole vocabulary, float32: exact, 4·V bytes per
  position. About 0.5 KiB per position for V = 1k, 200 KiB for V = 50k.
- ``topk``: the k likeliest tokens' ids and log-probs plus one tail bucket: an
  approximation (see `gate.unlearn.losses`), 12·k + 4 bytes per position.
- ``auto`` (default): ``full`` when it fits ``budget_mb``, else ``topk``.

Tables live on the CPU (pinned when training on a GPU) and move to the device one
batch at a time. Building them runs p0 over the windows and applies its output layer
only at the cached positions, a chunk of positions at a time
(`audit.model.head_chunks`): the (B, L, V) log-probs of a batch never exist at once.
A live p0 (the frozen copy, LoRA's base) hands its final hidden states at the KL
positions to the loss (`LiveRows`), which runs its output layer chunk by chunk too.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F

from audit.model import forward_hidden, head_chunks, vocab_of
from gate.unlearn.data import ForgetWindow, RetainWindow, TokenBatch, collate
from gate.unlearn.losses import (
    FullReference,
    LiveRows,
    Reference,
    RowSource,
    TopKReference,
    full_reference,
    topk_reference,
)
from gate.unlearn.settings import DEFAULT_BUDGET_MB, DEFAULT_TOPK, CacheMode

if TYPE_CHECKING:
    from gate.unlearn.methods import KLPositions


class ReferenceSource(Protocol):
    """p0's log-probs for one batch, at the rows of `positions` (row-major order)."""

    kind: str  # "cached-full", "cached-topk" or "frozen"
    nbytes: int  # memory it holds beyond the model being trained

    def forget(
        self, indices: Sequence[int], batch: TokenBatch, positions: torch.Tensor
    ) -> RowSource: ...

    def retain(
        self, indices: Sequence[int], batch: TokenBatch, positions: torch.Tensor
    ) -> RowSource: ...


def forget_positions(batch: TokenBatch, kind: KLPositions) -> torch.Tensor:
    """Where a forget loss needs p0: every secret token (S ∪ forgotten), or all tokens."""
    return batch.secret if kind == "secret" else batch.valid


def aligned_logprobs(model: torch.nn.Module, batch: TokenBatch) -> torch.Tensor:
    """log pθ(label j | tokens ≤ j) for every label position: (B, L, V), float32.

    The whole vocabulary at every position: the unchunked computation, for tests and
    benchmarks; the loop and the cache go through the output layer a chunk at a time."""

    logits = model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
    ).logits  # (B, T, V)
    return F.log_softmax(logits[:, :-1].float(), dim=-1)


@dataclass
class CachedReference:
    """p0's log-probs, computed once per window at the positions the losses use."""

    forget_tables: list[Reference | None]
    retain_tables: list[Reference | None]
    kind: str
    nbytes: int
    device: torch.device

    def forget(
        self, indices: Sequence[int], batch: TokenBatch, positions: torch.Tensor
    ) -> StackedRows:
        return StackedRows(_present([self.forget_tables[i] for i in indices]), self.device)

    def retain(
        self, indices: Sequence[int], batch: TokenBatch, positions: torch.Tensor
    ) -> StackedRows:
        return StackedRows(_present([self.retain_tables[i] for i in indices]), self.device)


@dataclass(frozen=True)
class StackedRows:
    """Several windows' cached rows, one after the other, as one `RowSource`: a chunk's
    rows are cut out of the tables they fall in when the chunk asks for them. The
    tables are never joined whole: at a 49k vocabulary a micro-batch of 7 windows of
    512 tokens would copy 700 MB of them."""

    tables: list[Reference]
    device: torch.device

    def rows(self, start: int, stop: int) -> Reference:
        parts, offset = [], 0
        for table in self.tables:
            count = _count(table)
            low, high = max(start, offset), min(stop, offset + count)
            if low < high:
                parts.append(table.rows(low - offset, high - offset))
            offset += count
        return _concat(parts or [self.tables[0].rows(0, 0)]).to(self.device)

    def whole(self) -> Reference:
        """Every row (for tests and small tables)."""
        return self.rows(0, sum(_count(t) for t in self.tables))


def _present(tables: Sequence[Reference | None]) -> list[Reference]:
    present = [t for t in tables if t is not None]
    if not present:
        raise ValueError("no cached p0 log-probs for this batch")
    return present


def _count(table: Reference) -> int:
    return len(table.probs) if isinstance(table, FullReference) else len(table.indices)


class LiveReference:
    """p0 computed on every batch by a model (`self.model`, set by the subclass)."""

    model: torch.nn.Module

    def forget(
        self, indices: Sequence[int], batch: TokenBatch, positions: torch.Tensor
    ) -> LiveRows:
        return self._at(batch, positions)

    def retain(
        self, indices: Sequence[int], batch: TokenBatch, positions: torch.Tensor
    ) -> LiveRows:
        return self._at(batch, positions)

    def _as_p0(self) -> contextlib.AbstractContextManager[object]:
        """The context in which `self.model` is p0 (nothing to switch by default)."""
        return contextlib.nullcontext()

    def _at(self, batch: TokenBatch, positions: torch.Tensor) -> LiveRows:

        with torch.no_grad(), self._as_p0():
            hidden, head = forward_hidden(self.model, batch.input_ids, batch.attention_mask)
        return LiveRows(hidden[:, :-1][positions], head, self._as_p0)


class FrozenReference(LiveReference):
    """A frozen copy of the model, run on every batch (the reference's way)."""

    kind = "frozen"

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
        self.nbytes = sum(p.numel() * p.element_size() for p in self.model.parameters())


def build_cache(
    model: torch.nn.Module,
    forget: Sequence[ForgetWindow],
    retain: Sequence[RetainWindow],
    *,
    forget_kl: KLPositions,
    retain_kl: bool,
    pad_id: int,
    mode: CacheMode = "auto",
    topk: int = DEFAULT_TOPK,
    budget_mb: int = DEFAULT_BUDGET_MB,
    batch_size: int = 32,
) -> CachedReference:
    """Run p0 once over every window and keep its log-probs where the losses need them."""

    device = next(model.parameters()).device
    vocab = int(model.get_output_embeddings().weight.shape[0])  # type: ignore[operator]
    positions = _count_forget(forget, forget_kl) + (
        sum(len(w.input_ids) - 1 for w in retain) if retain_kl else 0
    )
    exact = mode == "full" or (mode == "auto" and positions * vocab * 4 <= budget_mb * 2**20)
    keep_k = None if exact else topk
    forget_tables: list[Reference | None] = [None] * len(forget)
    retain_tables: list[Reference | None] = [None] * len(retain)
    fill = partial(_fill, pad_id=pad_id, topk=keep_k, size=batch_size, pin=device.type == "cuda")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        if forget_kl != "none":
            fill(model, forget, forget_tables, kind=forget_kl)
        if retain_kl:
            fill(model, retain, retain_tables, kind="all")
    model.train(was_training)
    tables = [t for t in forget_tables + retain_tables if t is not None]
    kind = "cached-full" if exact else f"cached-top{topk}"
    return CachedReference(forget_tables, retain_tables, kind, _nbytes(tables), device)


def _count_forget(windows: Sequence[ForgetWindow], kind: KLPositions) -> int:
    if kind == "none":
        return 0
    if kind == "secret":
        return sum(sum(w.secret_labels()) for w in windows)
    return sum(len(w.input_ids) - 1 for w in windows)


def _fill(
    model: torch.nn.Module,
    windows: Sequence[ForgetWindow | RetainWindow],
    tables: list[Reference | None],
    *,
    kind: KLPositions,
    pad_id: int,
    topk: int | None,
    size: int,
    pin: bool,
) -> None:
    device = next(model.parameters()).device
    vocab = vocab_of(model)
    for first in range(0, len(windows), size):
        chunk = list(windows[first : first + size])
        batch = collate(chunk, pad_id).to(device)
        mask = forget_positions(batch, kind)
        hidden, head = forward_hidden(model, batch.input_ids, batch.attention_mask)
        picked = hidden[:, :-1][mask]  # (N, D): the cached positions, row-major
        parts = []
        for rows in head_chunks(len(picked), vocab):
            logprobs = F.log_softmax(head(picked[rows]).float(), dim=-1)  # (n, V)
            part = full_reference(logprobs) if topk is None else topk_reference(logprobs, topk)
            parts.append(_to_cpu(part, pin=False))
        counts = mask.sum(dim=1).tolist()
        for row, table in enumerate(_split(_concat(parts), counts)):
            tables[first + row] = _pinned(table) if pin else table


def _split(table: Reference, counts: Sequence[int]) -> list[Reference]:
    """The rows of a table cut into consecutive pieces of `counts` rows."""
    out: list[Reference] = []
    start = 0
    for count in counts:
        out.append(_copy(table.rows(start, start + count)))
        start += count
    return out


def _copy(table: Reference) -> Reference:
    """A table that owns its rows (a slice would keep the whole batch's table alive)."""
    if isinstance(table, FullReference):
        return FullReference(table.probs.clone(), table.neg_entropy.clone())
    return TopKReference(table.indices.clone(), table.logprobs.clone(), table.tail.clone())


def _to_cpu(table: Reference, pin: bool) -> Reference:

    cpu = torch.device("cpu")
    table = table.to(cpu)
    return _pinned(table) if pin else table


def _pinned(table: Reference) -> Reference:
    if isinstance(table, FullReference):
        return FullReference(table.probs.pin_memory(), table.neg_entropy.pin_memory())
    return TopKReference(
        table.indices.pin_memory(), table.logprobs.pin_memory(), table.tail.pin_memory()
    )


def _concat(tables: Sequence[Reference | None]) -> Reference:

    present = _present(tables)
    first = present[0]
    if isinstance(first, FullReference):
        fulls = [t for t in present if isinstance(t, FullReference)]
        return FullReference(
            torch.cat([t.probs for t in fulls]), torch.cat([t.neg_entropy for t in fulls])
        )
    tops = [t for t in present if isinstance(t, TopKReference)]
    return TopKReference(
        torch.cat([t.indices for t in tops]),
        torch.cat([t.logprobs for t in tops]),
        torch.cat([t.tail for t in tops]),
    )


def _nbytes(tables: Sequence[Reference]) -> int:
    total = 0
    for table in tables:
        if isinstance(table, FullReference):
            for tensor in (table.probs, table.neg_entropy):
                total += tensor.numel() * tensor.element_size()
        else:
            for tensor in (table.indices, table.logprobs, table.tail):
                total += tensor.numel() * tensor.element_size()
    return total
