"""How the unlearning loop runs one step's forward and backward passes.

A step (design §5) unlearns k forget windows together: one optimizer update from
their summed loss. `Engine` decides how those k windows go through the model:

- **Token budget.** The windows are sorted by length and cut into micro-batches of at
  most ``batch_tokens`` padded tokens (rows × longest row), so a step's memory is
  bounded however long its windows are, and long and short windows are not padded to
  each other. Gradients accumulate over the micro-batches; the optimizer steps once.
  Each micro-batch's loss (a mean over its own positions) is weighted by its share of
  the step's windows, n_piece / k. When the step fits one micro-batch (k × window ≤
  budget, e.g. the demo) this is exactly the unbatched loss.
- **Gradient checkpointing** (optional): activations are recomputed in the backward
  pass instead of stored. Transformers checkpoints a decoder layer only while that
  layer is in training mode; the loop keeps the model in eval mode (no dropout), so
  the engine switches the layers' own flag on before each training forward, and
  leaves their children (dropout, attention) in eval mode.
- **Processes.** This engine is one process, plain torch. `gate.unlearn.accelerated`
  extends it to Accelerate (DDP / FSDP, mixed precision): the micro-batches are dealt
  round-robin to the processes, and every process gets the same number of them (a
  process short of work repeats a micro-batch with weight 0), so that the collective
  calls line up.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from audit.distributed import LOCAL, Shard
from audit.errors import InputError
from gate.unlearn.best import BestState
from gate.unlearn.data import ForgetWindow, RetainWindow, TokenBatch
from gate.unlearn.reference import aligned_logprobs
from gate.unlearn.settings import DEFAULT_TRAIN_BATCH_TOKENS


@dataclass(frozen=True)
class Piece:
    """One micro-batch of a step: window indices, and the share of the step's loss."""

    indices: list[int]
    weight: float  # n_piece / k, times the number of processes (their gradients are averaged)


def plan_pieces(
    indices: Sequence[int],
    lengths: Mapping[int, int],
    budget: int,
    *,
    rank: int = 0,
    world: int = 1,
) -> list[Piece]:
    """This rank's micro-batches of one step (`lengths[i]`: tokens of window i).

    Every rank computes the same plan: windows by decreasing length (ties by index),
    cut so that rows × longest ≤ `budget` (0: no cut), dealt round-robin to the ranks.
    Ranks with fewer micro-batches than the first get weight-0 repeats of one.
    """
    if not indices:
        return []
    order = sorted(indices, key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = [[]]
    for i in order:
        width = lengths[batches[-1][0]] if batches[-1] else lengths[i]
        if batches[-1] and budget and (len(batches[-1]) + 1) * width > budget:
            batches.append([])
        batches[-1].append(i)
    total = len(indices)
    mine = [Piece(batch, world * len(batch) / total) for batch in batches[rank::world]]
    rounds = -(-len(batches) // world)  # ceil: micro-batches of the busiest rank
    while len(mine) < rounds:
        mine.append(Piece(batches[-1], 0.0))
    return mine


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Turn on transformers' activation (gradient) checkpointing, non-reentrant: it works
    with frozen inputs, as under LoRA, and with DDP."""

    if not getattr(model, "supports_gradient_checkpointing", False):
        raise InputError(
            f"{type(model).__name__} does not support gradient checkpointing "
            "(leave --gradient-checkpointing off)"
        )
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers ≥ 5.2x
    if callable(enable):
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(  # type: ignore[operator]
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )


def checkpointed_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The layers transformers checkpoints (those with checkpointing switched on)."""
    return [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True]


class Engine:
    """One process, plain torch: token-budget micro-batches, optional checkpointing."""

    def __init__(
        self, *, batch_tokens: int = DEFAULT_TRAIN_BATCH_TOKENS, checkpointing: bool = False
    ) -> None:
        self.batch_tokens = batch_tokens
        self.checkpointing = checkpointing
        self.mixed_precision = "no"  # in force (Accelerate's engine: autocast dtype)
        self._layers: list[torch.nn.Module] = []

    @property
    def shard(self) -> Shard:
        """How the loop's measuring is shared between processes."""
        return LOCAL

    @property
    def measure_shard(self) -> Shard:
        """How the per-epoch re-measure is shared between processes."""
        return self.shard

    @property
    def is_main(self) -> bool:
        return self.shard.is_main

    def prepare(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """The module training forwards go through, and the optimizer to step."""
        if self.checkpointing:
            enable_checkpointing(model)
            self._layers = checkpointed_layers(model)
        return model, optimizer

    def pieces(
        self, indices: Sequence[int], windows: Sequence[ForgetWindow | RetainWindow]
    ) -> list[Piece]:
        lengths = {i: len(windows[i].input_ids) for i in indices}
        shard = self.shard
        return plan_pieces(indices, lengths, self.batch_tokens, rank=shard.rank, world=shard.world)

    def logprobs(self, model: torch.nn.Module, batch: TokenBatch) -> torch.Tensor:
        """log pθ at every label position of `batch`, through the training module."""

        for layer in self._layers:  # the flag transformers reads; children stay in eval mode
            layer.training = True
        try:
            return aligned_logprobs(model, batch)
        finally:
            for layer in self._layers:
                layer.training = False

    def backward(self, loss: torch.Tensor) -> None:

        torch.autograd.backward(loss)

    def all_finite(self, value: float) -> bool:
        """Whether the loss is finite on every process (all stop together if not)."""

        return math.isfinite(value)

    def step(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, max_grad_norm: float
    ) -> None:

        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()

    def best_state(self, folder: Path | None) -> BestState:
        return BestState(folder)

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, Any] | None:
        """The whole state dict when the model is sharded (FSDP); None otherwise."""
        return None
