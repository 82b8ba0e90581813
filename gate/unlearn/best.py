"""The best weights of an unlearning run so far: the ones with the lowest leak.

The loop offers its weights after every epoch's re-measure and restores the best ones
at the end. `gate.unlearn.accelerated.SharedBestState` extends this to several
processes (FSDP gathers the shards first).
"""

from __future__ import annotations

from pathlib import Path

import torch


class BestState:
    """The weights with the lowest leak so far, on disk (default) or in memory: the
    trainable parameters only (`trainable_state`), the rest is the original model's."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.score: tuple[float, ...] | None = None
        self.epoch = 0
        self._memory: dict[str, torch.Tensor] | None = None

    def offer(self, score: tuple[float, ...], epoch: int, model: torch.nn.Module) -> bool:
        """Keep `model`'s weights if `score` is lower than the best so far."""
        if self.score is not None and score >= self.score:
            return False
        self.score, self.epoch = score, epoch
        if self.folder is not None:
            # torch.save streams each tensor to the file; no second copy in memory
            torch.save(trainable_state(model), self.folder / "best.pt")
        else:
            self._memory = {k: v.to("cpu", copy=True) for k, v in trainable_state(model).items()}
        return True

    def restore(self, model: torch.nn.Module) -> None:
        if self.folder is not None:
            state = torch.load(self.folder / "best.pt", map_location="cpu", weights_only=True)
            load_trainable(model, state)
        elif self._memory is not None:
            load_trainable(model, self._memory)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters the loop trains, by name (every weight, or LoRA's adapters): with
    the original model, all that the best weights or a resume need."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy saved trainable parameters into `model`; they must be exactly its own."""
    trained = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(state) != set(trained):
        raise ValueError("saved weights are not this model's trainable parameters")
    with torch.no_grad():
        for name, value in state.items():
            trained[name].copy_(value)
