"""Running under ``accelerate launch``: which share of the work is this process's, and
how the shares come back together.

Under ``accelerate launch`` (Hugging Face Accelerate on ``torch.distributed``) every
process runs the same command. A `Shard` tells each one its rank and the number of
processes, picks its share of a list of work items (round-robin over a stable order:
item i belongs to rank i mod world), and gathers the per-rank results so that every
process ends up with all of them (``accelerate.utils.gather_object``, an all-gather).

Measuring shards whole *batches* rather than single findings: every process plans
the same batches from the same findings (the plan depends on the findings and the
token budget, never on the number of processes) and runs only its own. A batch then
holds exactly the rows it holds in a single-process run, so every number computed
from it is the same bit for bit, and results do not depend on the number of
processes.

A plain run (no launcher) gets `LOCAL`: one process, nothing imported, every method a
no-op. ``accelerate`` is imported only when a launcher started this process; if it is
missing, the error says how to install it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from audit.errors import InputError

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

INSTALL_HINT = "pip install 'codeeraser[dist]'"
# Set by torchrun (`accelerate launch --multi_gpu`) or by an MPI launcher.
_WORLD_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_world_size() -> int:
    """How many processes a launcher started (1 when none did)."""
    for name in _WORLD_VARS:
        value = os.environ.get(name, "")
        if value.strip().isdigit():
            return max(1, int(value))
    return 1


@dataclass(frozen=True)
class Shard:
    """This process's place in a run: rank r of `world`, and how to gather results.

    `gather_objects` and `barrier_fn` are Accelerate's when launched, no-ops otherwise.
    """

    rank: int = 0
    world: int = 1
    gather_objects: Callable[[list[Any]], list[Any]] = field(default=list, repr=False)
    barrier_fn: Callable[[], None] = field(default=lambda: None, repr=False)
    broadcast_fn: Callable[[Any], Any] = field(default=lambda obj: obj, repr=False)
    device: str | None = None  # the device the launcher gave this process (None: ours to pick)

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and prints summaries."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def mine(self, items: Sequence[T]) -> list[T]:
        """This rank's share of `items`: every world-th item, starting at its rank."""
        return list(items[self.rank :: self.world])

    def gather(self, part: dict[K, V]) -> dict[K, V]:
        """Every rank's `part` merged, on every rank (keys are disjoint across ranks)."""
        if not self.distributed:
            return part
        merged: dict[K, V] = {}
        for piece in self.gather_objects([part]):
            merged.update(piece)
        return merged

    def barrier(self) -> None:
        """Wait until every rank gets here (e.g. until rank 0 has written a file)."""
        self.barrier_fn()

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj`, on every rank."""
        result: T = self.broadcast_fn(obj)
        return result


LOCAL = Shard()


def current(*, cpu: bool | None = None) -> Shard:
    """The shard of this process: `LOCAL` unless a launcher started several processes.

    `cpu`: run the process group on CPUs (gloo) even where CUDA exists; by default on
    CPUs exactly when CUDA is absent, or when ``ACCELERATE_USE_CPU`` says so.
    """
    if launched_world_size() <= 1:
        return LOCAL
    return shard_of(_partial_state(cpu))


def shard_of(state: Any) -> Shard:
    """The Shard of an Accelerate process state (a `PartialState` or an `Accelerator`):
    its rank and world, and Accelerate's collectives."""
    from accelerate.utils import broadcast_object_list, gather_object

    def broadcast(obj: Any) -> Any:
        box = [obj]
        broadcast_object_list(box, from_process=0)
        return box[0]

    device = state.device
    return Shard(
        rank=int(state.process_index),
        world=int(state.num_processes),
        gather_objects=gather_object,
        barrier_fn=state.wait_for_everyone,
        broadcast_fn=broadcast,
        device=None if device is None else device.type,
    )


def _partial_state(cpu: bool | None) -> Any:
    """Accelerate's process-group state (it initialises torch.distributed once)."""
    try:
        from accelerate import PartialState
    except ImportError:
        raise InputError(
            f"this command was started by a distributed launcher, which needs Hugging Face "
            f"Accelerate ({INSTALL_HINT})"
        ) from None
    if cpu is None:
        forced = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
        cpu = forced or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def device_for(requested: str, shard: Shard) -> str:
    """The --device to load a model on in this process: the launcher's, when launched.

    Each process of a multi-GPU run owns one GPU; Accelerate makes it the current CUDA
    device, so "cuda" means that one. A launched run on CPUs loads on the CPU.
    """
    if not shard.distributed or shard.device is None:
        return requested
    if requested not in ("auto", shard.device):
        raise InputError(
            f"--device {requested} does not match the launcher's device ({shard.device}); "
            "leave --device at auto under accelerate launch"
        )
    return shard.device
