"""Unlearning under Hugging Face Accelerate: DDP, FSDP and mixed precision.

`AcceleratedEngine` runs the loop's steps through an ``accelerate.Accelerator``:

- **DDP** (``accelerate launch --multi_gpu``, or a CPU run with gloo): every process
  holds the whole model; a step's k windows are cut into token-budget micro-batches
  that are dealt round-robin to the processes (`gate.unlearn.engine.plan_pieces`), and
  DDP averages the gradients, each process's loss weighted by its share of the k
  windows. The per-epoch re-measure is sharded like ``codeeraser measure`` and
  gathered, so every process makes the same decisions (which findings are forgotten,
  when to stop). Only the first process keeps the best weights on disk; when they are
  restored, it broadcasts them.
- **FSDP** (``--config_file examples/accelerate/fsdp.yaml``, FSDP2): parameters,
  gradients and AdamW states are sharded across the processes. Every forward pass
  gathers parameters collectively, so every process must run the same forward calls:
  the re-measure runs in lockstep on every process (not sharded), and each process
  keeps its own shard of the best weights in CPU memory. The final weights are gathered
  to the first process to be saved. Not run here: Accelerate runs FSDP only on GPUs.
- **Mixed precision** (``bf16`` or ``fp16``): forward passes under autocast, float32
  master weights and AdamW states; fp16 also scales the loss. The output layer, which
  the loop runs a chunk of positions at a time outside the model's forward
  (`gate.unlearn.losses.token_stats`), runs under the same autocast; under FSDP it
  stays inside the forward (all positions at once), since FSDP reshards it after.

``accelerate`` is imported only here, and only when one of these is asked for.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from audit.distributed import INSTALL_HINT, LOCAL, Shard, launched_world_size, shard_of
from audit.errors import InputError
from gate.unlearn.best import BestState
from gate.unlearn.engine import Engine, engine_settings
from gate.unlearn.settings import DEFAULT_TRAIN_BATCH_TOKENS

if TYPE_CHECKING:
    from gate.unlearn.settings import UnlearnConfig


class AcceleratedEngine(Engine):
    """The loop's steps through an Accelerator (one process or many)."""

    def __init__(
        self,
        *,
        batch_tokens: int = DEFAULT_TRAIN_BATCH_TOKENS,
        checkpointing: bool | str = False,
        mixed_precision: str = "no",
        cpu: bool | None = None,
        batch_mb: int = 0,
        probe_tokens: int = 0,
    ) -> None:
        super().__init__(
            batch_tokens=batch_tokens,
            checkpointing=checkpointing,
            batch_mb=batch_mb,
            probe_tokens=probe_tokens,
        )
        accelerate = _accelerate()
        if cpu is None:
            forced = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
            cpu = forced or not torch.cuda.is_available()
        # "no" leaves the choice to the launcher's config (mixed_precision: bf16 there)
        asked = None if mixed_precision == "no" else mixed_precision
        try:
            self.accelerator = accelerate.Accelerator(mixed_precision=asked, cpu=cpu)
        except ValueError as exc:  # e.g. bf16 on hardware without it
            raise InputError(f"--mixed-precision {mixed_precision}: {exc}") from None
        self.mixed_precision = str(self.accelerator.mixed_precision)
        kind = accelerate.utils.DistributedType
        self.fsdp = self.accelerator.distributed_type == kind.FSDP
        if self.fsdp and not self.accelerator.is_fsdp2:
            raise InputError(
                "FSDP version 1 is not supported: set fsdp_version: 2 in the accelerate "
                "config (see examples/accelerate/fsdp.yaml)"
            )
        self._shard = shard_of(self.accelerator)
        # FSDP reshards the output layer after each forward: its logits come from the
        # model's own forward (all positions at once) there
        self.split_head = not self.fsdp

    @property
    def shard(self) -> Shard:
        return self._shard

    @property
    def measure_shard(self) -> Shard:
        """Under FSDP every forward is collective: every process measures everything."""
        return LOCAL if self.fsdp else self._shard

    @property
    def device(self) -> torch.device:
        device: torch.device = self.accelerator.device
        return device

    def prepare(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        model, optimizer = super().prepare(model, optimizer)
        wrapped, prepared = self.accelerator.prepare(model, optimizer)
        return wrapped, prepared

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """The output layer, run outside the model's forward, under the same autocast."""
        context: contextlib.AbstractContextManager[object] = self.accelerator.autocast()
        return context

    def all_finite(self, value: float) -> bool:

        flag = torch.tensor([1.0 if math.isfinite(value) else 0.0], device=self.device)
        return bool(self.accelerator.gather(flag).min() > 0)

    def step(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, max_grad_norm: float
    ) -> None:
        if max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()

    def best_state(self, folder: Path | None) -> BestState:
        return SharedBestState(folder if self.shard.is_main else None, self)

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, Any] | None:
        """Under FSDP, the whole state dict gathered to the first process (a collective:
        every process calls it); None when the model is not sharded."""
        if not self.fsdp:
            return None
        state: dict[str, Any] = self.accelerator.get_state_dict(model)
        return state


class SharedBestState(BestState):
    """The best weights of a run over several processes (trainable parameters only).

    DDP: the replicas are equal, so only the first process writes them (to `folder`);
    on restore it loads them and broadcasts every parameter to the others. FSDP: each
    process keeps its own shard in CPU memory. Every process tracks the same scores,
    since every process sees the same gathered measurements.
    """

    def __init__(self, folder: Path | None, engine: AcceleratedEngine) -> None:
        super().__init__(folder)
        self.engine = engine
        self._shards: dict[str, torch.Tensor] = {}

    def offer(self, score: tuple[float, ...], epoch: int, model: torch.nn.Module) -> bool:
        if self.score is not None and score >= self.score:
            return False
        self.score, self.epoch = score, epoch
        trained = _trainable(model)
        if self.engine.fsdp:
            self._shards = {k: _local(v).detach().to("cpu", copy=True) for k, v in trained.items()}
        elif self.folder is not None:
            torch.save({k: v.detach().cpu() for k, v in trained.items()}, self.folder / "best.pt")
        return True

    def restore(self, model: torch.nn.Module) -> None:

        trained = _trainable(model)
        with torch.no_grad():
            if self.engine.fsdp:
                for name, saved in self._shards.items():
                    _local(trained[name]).copy_(saved)
                return
            if self.folder is not None:
                state = torch.load(self.folder / "best.pt", map_location="cpu", weights_only=True)
                for name, saved in state.items():
                    trained[name].copy_(saved)
            if self.engine.shard.distributed:
                for parameter in trained.values():
                    dist.broadcast(parameter.data, src=0)


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (FSDP2), or the tensor itself."""
    to_local = getattr(tensor, "to_local", None)
    local: torch.Tensor = to_local() if callable(to_local) else tensor
    return local


def _accelerate() -> Any:
    try:
        import accelerate
        import accelerate.utils
    except ImportError:
        raise InputError(
            f"distributed or mixed-precision unlearning needs Hugging Face Accelerate "
            f"({INSTALL_HINT})"
        ) from None
    return accelerate


def engine_for(config: UnlearnConfig) -> Engine:
    """The engine a run needs: Accelerate's under a launcher or with mixed precision
    (``accelerate`` is imported only then), else plain torch."""
    if launched_world_size() > 1 or config.mixed_precision != "no":
        return AcceleratedEngine(mixed_precision=config.mixed_precision, **engine_settings(config))
    return Engine(**engine_settings(config))
