"""A copy of the trainable weights to put back later, on disk when they are on the CPU.

The lr probe (`gate.unlearn.autolr`) tries a rate from the current weights and puts
them back after each rung. Holding that copy in memory costs one model's weights
(538 MB at 135 M parameters in float32) on top of the weights, gradients and AdamW
states of the rung, and the probe is where the erase peaked. On the CPU the copy goes
to an unnamed temporary file instead: each parameter's bytes are written straight from
its storage and read straight back into it, so the copy costs no memory beyond one
non-contiguous parameter at a time, and the weights come back bit for bit. On an
accelerator the copy stays in the device's memory, where reading it back is cheap.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import torch


class WeightCopy:
    """The values of `params` now; `restore` puts them back (any number of times)."""

    def __init__(self, params: Sequence[torch.nn.Parameter], folder: Path | None) -> None:
        self.params = list(params)
        on_cpu = all(p.device.type == "cpu" for p in self.params)
        self._file: IO[bytes] | None = None
        self._memory: list[torch.Tensor] = []
        if folder is not None and on_cpu:
            self._file = tempfile.TemporaryFile(dir=folder, prefix="weights-")  # noqa: SIM115
            for p in self.params:
                self._file.write(_bytes_of(p.detach().contiguous()).numpy().data)
            self._file.flush()
        else:
            self._memory = [p.detach().clone() for p in self.params]

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    def restore(self) -> None:
        with torch.no_grad():
            if self._file is None:
                for p, saved in zip(self.params, self._memory, strict=True):
                    p.copy_(saved)
                return
            self._file.seek(0)
            for p in self.params:
                _read_into(self._file, p)

    def close(self) -> None:
        """Drop the copy (the file is deleted when closed)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._memory = []


def _bytes_of(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor's storage as a flat uint8 view (no copy)."""
    return tensor.reshape(-1).view(torch.uint8)


def _read_into(handle: IO[bytes], param: torch.Tensor) -> None:
    target = param.detach()
    buffer = target if target.is_contiguous() else torch.empty(target.shape, dtype=target.dtype)
    view = _bytes_of(buffer).numpy().data
    done = 0
    while done < len(view):
        count = handle.readinto(view[done:])  # type: ignore[attr-defined]
        if not count:
            raise OSError("the weights' copy on disk ended early")
        done += count
    if buffer is not target:
        target.copy_(buffer)
