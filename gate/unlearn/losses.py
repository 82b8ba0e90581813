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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


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
    """p0's log-probabilities over the whole vocabulary at N positions: (N, V)."""

    logprobs: Tensor

    def select(self, rows: Tensor) -> FullReference:
        return FullReference(self.logprobs[rows])

    def to(self, device: torch.device) -> FullReference:
        return FullReference(self.logprobs.to(device, non_blocking=True))


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

    def to(self, device: torch.device) -> TopKReference:
        return TopKReference(
            self.indices.to(device, non_blocking=True),
            self.logprobs.to(device, non_blocking=True),
            self.tail.to(device, non_blocking=True),
        )


Reference = FullReference | TopKReference


def full_reference(logprobs: Tensor) -> FullReference:
    """Keep p0's full log-probabilities (N, V)."""
    return FullReference(logprobs.detach())


def topk_reference(logprobs: Tensor, k: int) -> TopKReference:
    """Keep p0's top-k log-probabilities (N, V) -> (N, K) and the tail bucket (N,).

    k is capped at V − 1 so the tail always holds at least one token.
    """
    k = max(1, min(k, logprobs.shape[-1] - 1))
    values, indices = logprobs.detach().topk(k, dim=-1)  # (N, K)
    tail = _tail_logprob(logprobs.detach(), indices)
    return TopKReference(indices=indices, logprobs=values, tail=tail)


def _tail_logprob(logprobs: Tensor, indices: Tensor) -> Tensor:
    """log of the probability mass outside `indices`: (N, V), (N, K) -> (N,)."""
    outside = logprobs.scatter(-1, indices, float("-inf"))  # (N, V)
    return torch.logsumexp(outside, dim=-1)


def kl_per_position(reference: Reference, logprobs: Tensor) -> Tensor:
    """KL(p0‖pθ) at each of N positions: pθ's log-probs (N, V) -> (N,)."""
    if isinstance(reference, FullReference):
        return F.kl_div(logprobs, reference.logprobs, log_target=True, reduction="none").sum(-1)
    top = logprobs.gather(-1, reference.indices)  # (N, K)
    tail = _tail_logprob(logprobs, reference.indices)  # (N,)
    ref_top, ref_tail = reference.logprobs, reference.tail
    kl_top = (ref_top.exp() * (ref_top - top)).sum(-1)
    kl_tail = ref_tail.exp() * (ref_tail - tail)
    return kl_top + kl_tail


def kl_mean(reference: Reference, logprobs: Tensor) -> Tensor:
    """KL(p0‖pθ) averaged over the N positions of the reference (0 when N is 0)."""
    if logprobs.shape[0] == 0:
        return logprobs.sum() * 0.0  # keeps the graph connected, adds nothing
    return kl_per_position(reference, logprobs).mean()
