"""The best weights of an unlearning run so far: the ones with the lowest leak.

The loop offers its weights after every epoch's re-measure and restores the best ones
at the end. `gate.unlearn.accelerated.SharedBestState` extends this to several
processes (FSDP gathers the shards first).
"""

from __future__ import annotations

from pathlib import Path

import torch


class BestState:
    """The weights with the lowest leak so far, on disk (default) or in memory."""

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
            torch.save(model.state_dict(), self.folder / "best.pt")
        else:
            self._memory = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }
        return True

    def restore(self, model: torch.nn.Module) -> None:
        if self.folder is not None:
            state = torch.load(self.folder / "best.pt", map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        elif self._memory is not None:
            model.load_state_dict(self._memory)
