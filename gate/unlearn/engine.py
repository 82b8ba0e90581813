"""How the unlearning loop runs one step's forward and backward passes.

A step (design §5) unlearns k forget windows together: one optimizer update from
their summed loss. `Engine` decides how those k windows go through the model:

- **Memory budget.** The windows are sorted by length and cut into micro-batches of at
  most ``batch_tokens`` padded tokens (rows × longest row), so a step's memory is
  bounded however long its windows are, and long and short windows are not padded to
  each other. ``batch_tokens`` is the smaller of the setting ``train_batch_tokens``
  and what ``train_batch_mb`` allows: when the run starts, `activation_bytes` measures
  the bytes autograd keeps for the backward pass per token of a window (a forward over
  one window and over half of it, as the loop runs it: checkpointing, LoRA, autocast;
  the difference is per token, so weight copies made once per forward do not count),
  and the budget over that is the most tokens a micro-batch may have (at least one
  window). The vocabulary's share is fixed apart: the output layer runs a chunk of
  positions at a time, at most ``train_batch_mb`` / 64 bytes' worth of logits
  (``logit_budget``), so a chunk's logits, their log-softmax and their gradients take
  about a sixteenth of the budget whatever V is. Gradients accumulate over the
  micro-batches; the optimizer steps once. Each micro-batch's loss (a mean over its
  own positions) is weighted by its share of the step's windows, n_piece / k. When the
  step fits one micro-batch (k × window ≤ budget, e.g. the demo) this is exactly the
  unbatched loss.
- **Gradient checkpointing** (on, off, or `auto`: on when one window's activations,
  measured as above, are over ``batch_mb``, since the cut cannot go below one window;
  a 512-token window of a 135M Llama keeps 656 MB, 36 MB checkpointed): activations
  are recomputed in the backward pass instead of stored. Transformers checkpoints a
  decoder layer only while that layer is in training mode; the loop keeps the model
  in eval mode (no dropout), so the engine switches the layers' own flag on before
  each training forward, and leaves their children (dropout, attention) in eval mode.
- **Processes.** This engine is one process, plain torch. `gate.unlearn.accelerated`
  extends it to Accelerate (DDP / FSDP, mixed precision): the micro-batches are dealt
  round-robin to the processes, and every process gets the same number of them (a
  process short of work repeats a micro-batch with weight 0), so that the collective
  calls line up.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from audit.distributed import LOCAL, Shard
from audit.errors import InputError
from audit.model import (
    LOGIT_BUDGET,
    context_length_of,
    forward_hidden,
    split_head,
    vocab_of,
)
from gate.unlearn.best import BestState
from gate.unlearn.data import ForgetWindow, RetainWindow, TokenBatch
from gate.unlearn.losses import RowSource, TokenStats, token_stats
from gate.unlearn.settings import DEFAULT_TRAIN_BATCH_TOKENS, UnlearnConfig


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


def engine_settings(config: UnlearnConfig) -> dict[str, Any]:
    """An engine's keyword arguments from the loop's settings."""
    return {
        "batch_tokens": config.train_batch_tokens,
        "checkpointing": {"on": True, "off": False}.get(config.gradient_checkpointing, "auto"),
        "batch_mb": config.train_batch_mb,
        "probe_tokens": config.window_tokens,
    }


def logit_budget(batch_mb: int) -> int:
    """Logits per chunk of positions in training: batch_mb / 64 bytes' worth (a chunk's
    logits, log-softmax and gradients, float32, about a sixteenth of the budget), at
    most LOGIT_BUDGET; LOGIT_BUDGET without a memory budget."""
    return min(LOGIT_BUDGET, batch_mb * 2**20 // 64) if batch_mb else LOGIT_BUDGET


def activation_bytes(model: torch.nn.Module, tokens: int) -> int:
    """Bytes autograd keeps for the backward pass per token of one window of `tokens`
    tokens: a forward over the window and one over its first half, counting each saved
    storage once (parameters left out); the difference over the tokens it adds, so that
    what a forward keeps once (autocast's weight copies) is not charged per token."""
    tokens = max(2, tokens)
    full, half = _saved_bytes(model, tokens), _saved_bytes(model, tokens // 2)
    return max(1, (full - half) // (tokens - tokens // 2))


def _saved_bytes(model: torch.nn.Module, tokens: int) -> int:
    device = next(model.parameters()).device
    ids = torch.zeros((1, tokens), dtype=torch.long, device=device)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    sizes: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            sizes[storage.data_ptr()] = storage.nbytes()
        # not the tensor itself: an op's output saved as itself would hold its own
        # grad_fn, a cycle the collector cannot see (the whole graph, 1 GB at 135M,
        # stayed in memory after each measurement)
        return tensor.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        hidden, _ = forward_hidden(model, ids, torch.ones_like(ids))
        del hidden
    return sum(sizes.values())


def can_checkpoint(model: torch.nn.Module) -> bool:
    """Whether transformers can checkpoint this model's layers (`auto` leaves it off
    for a model that cannot; `on` is an error there)."""
    return bool(getattr(model, "supports_gradient_checkpointing", False))


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Turn on transformers' activation (gradient) checkpointing, non-reentrant: it works
    with frozen inputs, as under LoRA, and with DDP."""

    if not can_checkpoint(model):
        raise InputError(
            f"{type(model).__name__} does not support gradient checkpointing "
            "(give --gradient-checkpointing off or auto)"
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
    """One process, plain torch: memory-budget micro-batches, optional checkpointing."""

    def __init__(
        self,
        *,
        batch_tokens: int = DEFAULT_TRAIN_BATCH_TOKENS,
        checkpointing: bool | str = False,
        batch_mb: int = 0,
        probe_tokens: int = 0,
    ) -> None:
        self.batch_tokens = batch_tokens  # the cut in force (tokens; 0: none)
        self._asked_tokens = batch_tokens  # the setting, before the memory budget's cut
        self.checkpointing = checkpointing  # True, False or "auto"
        self._ready = False
        self.batch_mb = batch_mb  # activations a micro-batch may keep (0: tokens only)
        self.probe_tokens = probe_tokens  # window length `activation_bytes` measures at
        self.token_bytes = 0  # measured activation bytes per token (0: not measured)
        self.mixed_precision = "no"  # in force (Accelerate's engine: autocast dtype)
        self.split_head = True  # logits a chunk of positions at a time (off under FSDP)
        self.logit_budget = logit_budget(batch_mb)  # logits per chunk
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
        self.ready(model)
        return model, optimizer

    def ready(self, model: torch.nn.Module) -> None:
        """Set the bare model up for training, once (the lr probe's steps and the loop
        share it): the output layer checked (before any wrapper or autocast),
        checkpointing on if set or if `auto` needs it, micro-batches cut by the budget."""
        if self._ready:
            return
        split_head(model)
        if self.checkpointing is True:
            self._checkpoint(model)
        self.size_for(model)
        if self.checkpointing == "auto" and self._window_over_budget() and can_checkpoint(model):
            self._checkpoint(model)
            self.token_bytes = 0
            self.batch_tokens = self._asked_tokens
            self.size_for(model)
        self._ready = True

    def _checkpoint(self, model: torch.nn.Module) -> None:
        enable_checkpointing(model)
        self._layers = checkpointed_layers(model)

    def _window_over_budget(self) -> bool:
        """One window keeps more activations than the budget allows a micro-batch (the
        cut cannot go below one window): checkpointing is what bounds it then."""
        window = self.probe_tokens * self.token_bytes
        return bool(self.batch_mb) and window > self.batch_mb * 2**20

    @property
    def checkpoints(self) -> bool:
        """Whether the layers are checkpointed (as set, or as `auto` decided)."""
        return bool(self._layers)

    def size_for(self, model: torch.nn.Module) -> None:
        """Cut micro-batches by the memory budget: measure the activation bytes per token
        on the bare model (before any wrapper), once."""
        if not self.batch_mb or not self.probe_tokens or self.token_bytes:
            return
        was_training = model.training
        model.eval()  # as the loop runs it: no dropout
        try:
            tokens = min(self.probe_tokens, context_length_of(model))
            self.probe_tokens = tokens
            with torch.enable_grad(), self._training_flags(), self.autocast():
                self.token_bytes = activation_bytes(model, tokens)
        finally:
            model.train(was_training)
        fits = max(1, self.batch_mb * 2**20 // max(1, self.token_bytes))
        self.batch_tokens = min(self.batch_tokens, fits) if self.batch_tokens else fits

    @contextlib.contextmanager
    def _training_flags(self) -> Iterator[None]:
        """The checkpointed layers' own training flag on (what transformers reads to
        checkpoint them); their children stay in eval mode (no dropout)."""
        for layer in self._layers:
            layer.training = True
        try:
            yield
        finally:
            for layer in self._layers:
                layer.training = False

    def pieces(
        self, indices: Sequence[int], windows: Sequence[ForgetWindow | RetainWindow]
    ) -> list[Piece]:
        lengths = {i: len(windows[i].input_ids) for i in indices}
        shard = self.shard
        return plan_pieces(indices, lengths, self.batch_tokens, rank=shard.rank, world=shard.world)

    def token_stats(
        self,
        model: torch.nn.Module,
        batch: TokenBatch,
        need: torch.Tensor,
        reference: RowSource | None = None,
        kl_at: torch.Tensor | None = None,
    ) -> TokenStats:
        """pθ at the label positions of `need` (NLL, greedy hit) and the KL to p0 at
        `kl_at`, through the training module; the output layer runs a chunk of
        positions at a time (`gate.unlearn.losses.token_stats`)."""

        with self._training_flags():
            hidden, head = forward_hidden(
                model, batch.input_ids, batch.attention_mask, split=self.split_head
            )
        with self.autocast():
            return token_stats(
                head,
                hidden[:, :-1],
                batch.labels,
                need,
                reference=reference,
                kl_at=kl_at,
                vocab=vocab_of(model),
                budget=self.logit_budget,
            )

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """The context the output layer runs in: the forward pass's (no autocast here)."""
        return contextlib.nullcontext()

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
