"""The options of `codeeraser scan` that choose its engine (see `gate.scale`).

Kept apart from `gate.scale`, which imports datatrove: `codeeraser scan --help` and the
local engine do not need it installed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, TypeVar

import click

from audit.errors import InputError

F = TypeVar("F", bound=Callable[..., Any])
ENGINES = ("local", "datatrove")
EXECUTORS = ("local", "slurm", "ray")


@dataclass(frozen=True)
class EngineOptions:
    """How to run the scan: this machine's worker processes, or datatrove tasks."""

    engine: str = "local"
    executor: str = "local"
    tasks: int = 0  # 0: one per core (local), one per cluster CPU (ray); slurm needs it
    workers: int = 0  # tasks running at once; 0: as many as the executor allows
    work_dir: str | None = None  # default: next to --out
    slurm_partition: str | None = None
    slurm_time: str = "24:00:00"
    slurm_sbatch: tuple[str, ...] = field(default=())  # extra sbatch directives KEY=VALUE

    @property
    def datatrove(self) -> bool:
        return self.engine == "datatrove"


_OPTIONS: list[Callable[[Any], Any]] = [
    click.option(
        "--engine",
        type=click.Choice(ENGINES),
        default="local",
        show_default=True,
        help="local: worker processes on this machine (--jobs). datatrove: datatrove tasks "
        "on --executor, resumable, for corpora beyond one machine; DATA may then be an "
        "s3:// or hf://datasets/ URL.",
    ),
    click.option(
        "--executor",
        type=click.Choice(EXECUTORS),
        default="local",
        show_default=True,
        help="With --engine datatrove: run the tasks as local processes, a Slurm job "
        "array, or on a Ray cluster (RAY_ADDRESS, else a local Ray runtime).",
    ),
    click.option(
        "--tasks",
        type=click.IntRange(min=0, max=1_000_000),
        default=0,
        help="With --engine datatrove: tasks the corpus is split into (by file; by row "
        "for a saved HF dataset). 0: one per core (local) or per cluster CPU (ray); "
        "Slurm needs a number.  [default: 0]",
    ),
    click.option(
        "--workers",
        type=click.IntRange(min=0, max=1_000_000),
        default=0,
        help="With --engine datatrove: tasks running at once (0: as many as the executor "
        "allows; local: the number of cores).  [default: 0]",
    ),
    click.option(
        "--work-dir",
        metavar="PATH",
        help="With --engine datatrove: shards, completion markers and logs (a path or "
        "fsspec URL, shared by every machine). Rerun with the same folder to resume.  "
        "[default: OUT with the suffix .work]",
    ),
    click.option("--slurm-partition", metavar="NAME", help="With --executor slurm: the partition."),
    click.option(
        "--slurm-time",
        default="24:00:00",
        show_default=True,
        metavar="TIME",
        help="With --executor slurm: the time limit of each task.",
    ),
    click.option(
        "--slurm-sbatch",
        multiple=True,
        metavar="KEY=VALUE",
        help="With --executor slurm: an extra #SBATCH directive (repeatable), e.g. "
        "account=myproject.",
    ),
]


def engine_options(command: F) -> F:
    """Add the engine options to a command; it receives them as one `engine` argument."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["engine"] = _engine_from(kwargs)
        return command(*args, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


def _engine_from(kwargs: dict[str, Any]) -> EngineOptions:
    names = ("executor", "tasks", "workers", "work_dir", "slurm_partition", "slurm_time")
    engine = EngineOptions(
        engine=kwargs.pop("engine"),
        **{name: kwargs.pop(name) for name in names},
        slurm_sbatch=tuple(kwargs.pop("slurm_sbatch")),
    )
    if not engine.datatrove and engine != EngineOptions(engine=engine.engine):
        raise click.UsageError(
            "--executor, --tasks, --workers, --work-dir and --slurm-* need --engine datatrove"
        )
    if engine.executor == "slurm" and not (engine.slurm_partition and engine.tasks):
        raise click.UsageError("--executor slurm needs --slurm-partition and --tasks")
    return engine


def run_datatrove(*args: Any, **kwargs: Any) -> Any:
    """`gate.scale.scan_with_datatrove`, imported with loguru set never to print the
    variables of a traceback's frames (loguru reads LOGURU_DIAGNOSE when it loads)."""
    os.environ.setdefault("LOGURU_DIAGNOSE", "NO")
    try:
        from gate.scale import scan_with_datatrove
    except ImportError:
        raise InputError(
            "--engine datatrove needs datatrove: pip install 'codeeraser[scale]'"
        ) from None
    return scan_with_datatrove(*args, **kwargs)
