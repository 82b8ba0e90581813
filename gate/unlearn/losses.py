"""Loss maths for unlearning: pure functions on tensors, no model and no state.

Alignment. A causal LM's ``logits[:, t]`` predicts token ``t + 1``. Every function
here takes tensors that are already aligned with their labels:

- ``logprobs`` (B, L, V): ``log_softmax(logits[:, :-1])``, with L = T - 1;
- ``labels`` (B, L): ``input_ids[:, 1:]``;
- boolean masks (B, L) over label positions. Pads are False in every mask.

A mean over a mask divides by the number of True positions, never by B·L, so pads
never dilute a mean (the reference implementation's ``batchmean`` KL divided a sum
that included pad positions by the batch size).

KL(p0‖pθ) at one position is ``Σ_v p0(v) · (log p0(v) − log pθ(v))``, p0 the original
model, pθ the model being changed. p0 comes from a reference table: either its full
log-probabilities at the positions used (``FullReference``, exact) or its top-k
log-probabilities plus one bucket for the rest of the vocabulary (``TopKReference``,
an approximation: the KL between the two distributions coarsened to k + 1 outcomes,
which is never larger than the exact KL, by the log-sum inequality, and equals it when
pθ spreads the tail mass in the same proportions as p0).

Never the whole (B, L, V) at once. `token_stats` reduces pθ to what the losses use, per
label position: the label's NLL, whether pθ's argmax is the label, and the KL to p0
where p0 is given, each (B, L). It applies the output layer to the final hidden states
a chunk of positions at a time (`audit.model.head_chunks`); in training each chunk runs
under `torch.utils.checkpoint`, so a chunk's logits are freed as soon as its values are
computed and recomputed, one chunk at a time, in the backward pass. A loss is then a
masked mean of those values. Per position the values are the ones the (B, L, V)
log-probs give (same operations on the same rows); the gradient of the output layer's
weights is summed chunk by chunk, a different summation order (tests: within 1e-5).
p0 arrives as rows in the order of the KL positions (`RowSource`): a cached table
(`FullReference`, `TopKReference`) or p0's own hidden states run through its output
layer chunk by chunk (`LiveRows`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from audit.model import LOGIT_BUDGET, Head, head_chunks


def token_nll(logprobs: Tensor, labels: Tensor) -> Tensor:
    """Negative log-likelihood of each label: (B, L, V), (B, L) -> (B, L)."""
    return -logprobs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` over the True positions of `mask` (0 when none are True)."""
    weights = mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


def masked_ce(logprobs: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Token cross-entropy averaged over the positions of `mask`."""
    return masked_mean(token_nll(logprobs, labels), mask)


@dataclass(frozen=True)
class FullReference:
    """p0 over the whole vocabulary at N positions: probabilities (N, V), and
    ``neg_entropy`` (N,) = Σ_v p0 log p0, so that KL(p0‖pθ) = neg_entropy − Σ_v p0 log pθ
    needs no (N, V) temporary beyond the one its gradient needs."""

    probs: Tensor
    neg_entropy: Tensor

    def select(self, rows: Tensor) -> FullReference:
        return FullReference(self.probs[rows], self.neg_entropy[rows])

    def rows(self, start: int, stop: int) -> FullReference:
        return FullReference(self.probs[start:stop], self.neg_entropy[start:stop])

    def to(self, device: torch.device) -> FullReference:
        return FullReference(
            self.probs.to(device, non_blocking=True),
            self.neg_entropy.to(device, non_blocking=True),
        )


@dataclass(frozen=True)
class TopKReference:
    """p0's k most likely tokens at N positions: indices (N, K) and log-probs (N, K).

    The rest of the vocabulary is one bucket whose log-probability is
    ``log(1 − Σ_k p0)``, stored as ``tail`` (N,) so it keeps full precision.
    """

    indices: Tensor
    logprobs: Tensor
    tail: Tensor

    def select(self, rows: Tensor) -> TopKReference:
        return TopKReference(self.indices[rows], self.logprobs[rows], self.tail[rows])

    def rows(self, start: int, stop: int) -> TopKReference:
        return TopKReference(
            self.indices[start:stop], self.logprobs[start:stop], self.tail[start:stop]
        )

    def to(self, device: torch.device) -> TopKReference:
        return TopKReference(
            self.indices.to(device, non_blocking=True),
            self.logprobs.to(device, non_blocking=True),
            self.tail.to(device, non_blocking=True),
        )


Reference = FullReference | TopKReference


def full_reference(logprobs: Tensor) -> FullReference:
    """Keep p0 over the full vocabulary, from its log-probabilities (N, V)."""
    logprobs = logprobs.detach()
    probs = logprobs.exp()
    return FullReference(probs, (probs * logprobs).sum(-1))


def topk_reference(logprobs: Tensor, k: int) -> TopKReference:
    """Keep p0's top-k log-probabilities (N, V) -> (N, K) and the tail bucket (N,).

    k is capped at V − 1 so the tail always holds at least one token.
    """
    k = max(1, min(k, logprobs.shape[-1] - 1))
    values, indices = logprobs.detach().topk(k, dim=-1)  # (N, K)
    tail = _tail_logprob(logprobs.detach(), indices)
    return TopKReference(indices=indices, logprobs=values, tail=tail)


def _tail_logprob(logprobs: Tensor, indices: Tensor) -> Tensor:
    """log of the probability mass outside `indices`, exactly: (N, V), (N, K) -> (N,).

    Builds an (N, V) copy: used once per position for p0, never in a training step."""
    outside = logprobs.scatter(-1, indices, float("-inf"))  # (N, V)
    return torch.logsumexp(outside, dim=-1)


def _tail_from_top(top: Tensor) -> Tensor:
    """log(1 − Σ exp(top)) from the top-k log-probs alone (N, K) -> (N,): no (N, V) copy.

    Clamped at 1e-30 when the top-k hold all the mass in float precision."""
    covered = torch.logsumexp(top, dim=-1).clamp(max=0.0)
    return torch.log((-torch.expm1(covered)).clamp(min=1e-30))


def kl_per_position(reference: Reference, logprobs: Tensor) -> Tensor:
    """KL(p0‖pθ) at each of N positions: pθ's log-probs (N, V) -> (N,)."""
    if isinstance(reference, FullReference):
        cross = torch.einsum("nv,nv->n", reference.probs, logprobs)  # Σ_v p0 log pθ
        return reference.neg_entropy - cross
    top = logprobs.gather(-1, reference.indices)  # (N, K)
    tail = _tail_from_top(top)  # (N,)
    ref_top, ref_tail = reference.logprobs, reference.tail
    kl_top = (ref_top.exp() * (ref_top - top)).sum(-1)
    kl_tail = ref_tail.exp() * (ref_tail - tail)
    return kl_top + kl_tail


def rows(logprobs: Tensor, mask: Tensor) -> Tensor:
    """The (N, V) rows of `logprobs` (B, L, V) where `mask` (B, L) is True, in row-major
    order; a view (no copy) when every position is in the mask."""
    if bool(mask.all()):
        return logprobs.flatten(0, 1)
    return logprobs[mask]


def kl_mean(reference: Reference, logprobs: Tensor) -> Tensor:
    """KL(p0‖pθ) averaged over the N positions of the reference (0 when N is 0)."""
    if logprobs.shape[0] == 0:
        return logprobs.sum() * 0.0  # keeps the graph connected, adds nothing
    return kl_per_position(reference, logprobs).mean()


# --- pθ reduced to what the losses use, a chunk of positions at a time ----------------


class RowSource(Protocol):
    """p0 at the KL positions of a batch, rows [start, stop) in row-major order."""

    def rows(self, start: int, stop: int) -> Reference: ...


@dataclass(frozen=True)
class LiveRows:
    """p0 computed when asked: its final hidden states at the KL positions (N, D), run
    through its output layer a chunk at a time, inside `context` (e.g. LoRA off)."""

    hidden: Tensor
    head: Head
    context: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext

    def rows(self, start: int, stop: int) -> FullReference:
        with torch.no_grad(), self.context():
            logits = self.head(self.hidden[start:stop])
            return full_reference(F.log_softmax(logits.float(), dim=-1))


@dataclass(frozen=True)
class TokenStats:
    """pθ at the label positions of a batch, (B, L) each; 0 / False where not computed."""

    nll: Tensor  # −log pθ(label), float32, with gradient
    predicted: Tensor  # bool: pθ's argmax is the label (no gradient)
    kl: Tensor | None  # KL(p0‖pθ) at the KL positions (None: no p0 given)


def stats_from_logprobs(
    logprobs: Tensor,
    labels: Tensor,
    reference: Reference | None = None,
    kl_at: Tensor | None = None,
) -> TokenStats:
    """The stats from whole (B, L, V) log-probs: the unchunked computation, which
    `token_stats` equals (`reference` holds p0 at `kl_at`, row-major)."""
    nll = token_nll(logprobs, labels)
    predicted = logprobs.detach().argmax(dim=-1) == labels
    kl = None
    if reference is not None and kl_at is not None:
        kl = nll.new_zeros(nll.shape).masked_scatter(
            kl_at, kl_per_position(reference, logprobs[kl_at])
        )
    return TokenStats(nll, predicted, kl)


def token_stats(
    head: Head,
    hidden: Tensor,
    labels: Tensor,
    need: Tensor,
    *,
    reference: RowSource | None = None,
    kl_at: Tensor | None = None,
    vocab: int,
    budget: int = LOGIT_BUDGET,
) -> TokenStats:
    """NLL and greedy hit at the positions of `need`, KL to p0 at those of `kl_at` (a
    subset of `need`; p0's rows in `reference`), from final hidden states (B, L, D)
    aligned with `labels` (B, L), through the output layer `head`, at most `budget`
    logits at a time."""
    if reference is None or kl_at is None:
        reference, kl_at = None, None
    elif bool((kl_at & ~need).any()):
        raise ValueError("KL positions must be among the positions computed")
    h, y = hidden[need], labels[need]  # (N, D), (N,)
    sel = kl_at[need] if kl_at is not None else None  # (N,): rows that need the KL
    parts: list[tuple[Tensor, Tensor, Tensor | None]] = []
    first = 0  # p0's row for the next chunk's first KL position
    for rows in head_chunks(len(h), vocab, budget):
        count = int(sel[rows].sum()) if sel is not None else 0
        p0 = _Window(reference, first, first + count) if reference is not None else None
        chunk = _Chunk(head, y[rows], sel[rows] if sel is not None else None, p0)
        parts.append(chunk.run(h[rows]))
        first += count
    return _scattered(labels, need, kl_at, parts)


@dataclass(frozen=True)
class _Window:
    """Rows [start, stop) of a RowSource, fetched when the chunk runs (and re-runs)."""

    source: RowSource
    start: int
    stop: int

    def get(self) -> Reference:
        return self.source.rows(self.start, self.stop)


@dataclass(frozen=True)
class _Chunk:
    """One chunk of positions: their labels, which of them need the KL, and p0 there."""

    head: Head
    labels: Tensor  # (n,)
    kl_rows: Tensor | None  # (n,) bool
    p0: _Window | None

    def run(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        if torch.is_grad_enabled() and h.requires_grad:  # logits freed, recomputed in backward
            out: tuple[Tensor, Tensor, Tensor | None] = checkpoint(
                self._values, h, use_reentrant=False
            )
            return out
        return self._values(h)

    def _values(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        logprobs = F.log_softmax(self.head(h).float(), dim=-1)  # (n, V)
        nll = token_nll(logprobs, self.labels)
        predicted = logprobs.detach().argmax(dim=-1) == self.labels
        kl = None
        if self.p0 is not None and self.kl_rows is not None:
            kl = kl_per_position(self.p0.get(), logprobs[self.kl_rows])
        return nll, predicted, kl


def _scattered(
    labels: Tensor,
    need: Tensor,
    kl_at: Tensor | None,
    parts: list[tuple[Tensor, Tensor, Tensor | None]],
) -> TokenStats:
    """The chunks' values put back at their (B, L) positions."""
    zeros = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    nll = zeros.masked_scatter(need, torch.cat([part[0] for part in parts]))
    hits = torch.zeros_like(need).masked_scatter(need, torch.cat([part[1] for part in parts]))
    if kl_at is None:
        return TokenStats(nll, hits, None)
    kl_parts = [part[2] for part in parts if part[2] is not None]
    kl = zeros.masked_scatter(kl_at, torch.cat(kl_parts) if kl_parts else zeros[kl_at])
    return TokenStats(nll, hits, kl)


def masked_values_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` (B, L) at the positions of `mask`, in row-major order (0 when
    none: a zero that keeps the graph connected)."""
    picked = values[mask]
    if picked.shape[0] == 0:
        return values.sum() * 0.0
    return picked.mean()
