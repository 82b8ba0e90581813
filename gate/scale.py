"""`codeeraser scan --engine datatrove`: the scan as datatrove tasks, then one merge.

The pipeline is `audit.datatrove_step`'s reader and scan step, run as --tasks tasks by
a datatrove executor (local processes, a Slurm job array, or a Ray cluster). Everything
the run keeps is under --work-dir:

    scan.json     the scan's settings: a rerun with other settings is refused
    shards/       one findings shard and one summary per finished task
    logs/         datatrove's logging folder: completions/ (a marker per finished
                  task: a rerun skips those tasks), logs/, stats/

When every task has finished, the shards are merged into --out, identical byte for byte
to what `codeeraser scan` (the local engine) writes for the same data. On Slurm the
command submits the job array and a merge job that depends on it, and returns.

Import this module through `gate.commands.scan_engine.run_datatrove`, which first sets
LOGURU_DIAGNOSE=NO: loguru (datatrove's logger) reads it once, and otherwise prints the
variables of every frame of a traceback, which can hold training data.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datatrove.executor import (
    LocalPipelineExecutor,
    RayPipelineExecutor,
    SlurmPipelineExecutor,
)
from datatrove.executor.base import PipelineExecutor
from datatrove.io import get_datafolder
from loguru import logger

from audit.corpus import CorpusSpec
from audit.datatrove_step import (
    MergeFindings,
    ReadOptions,
    ScanSecrets,
    corpus_reader,
    open_merge,
    settings_digest,
)
from audit.errors import CodeEraserError, InputError
from audit.findings import Finding
from audit.scan import ScanSummary, resolve_jobs
from gate import __version__, ui

if TYPE_CHECKING:
    from gate.commands.scan_engine import EngineOptions

log = logging.getLogger(__name__)
MANIFEST = "scan.json"
Progress = Callable[[int, int], None]  # (tasks newly finished, tasks in all)


def scan_with_datatrove(
    data: str,
    *,
    spec: CorpusSpec,
    detectors: tuple[str, ...] | None,
    engine: EngineOptions,
    out: Path,
    summary: ScanSummary,
    progress: Progress | None = None,
) -> Iterator[Finding] | None:
    """Run the scan's tasks and return the merged findings (in the CLI's order), having
    filled `summary`. None when the tasks were submitted to Slurm: a merge job writes
    `out` once they finish. DATA is read as `spec` says (its path is not used: DATA may
    be a URL)."""
    read = ReadOptions(spec.fmt, spec.text_field, spec.id_field, spec.on_bad_record)
    excludes = spec.excludes
    work = engine.work_dir or str(out.with_suffix(".work"))
    _check_work_dir(work, data, out)
    reader = corpus_reader(data, read)
    with _ray_session(engine):
        engine = replace(engine, tasks=_tasks(engine))
        settings = _manifest(work, data, read, (detectors, excludes), engine.tasks)
        step = ScanSecrets(f"{work}/shards", detectors, excludes, reader, settings=settings)
        executor = build_executor([reader, step], engine, f"{work}/logs")
        if engine.executor == "slurm":
            _submit_slurm(executor, engine, work, out, (data, settings))
            return None
        _run(executor, engine.tasks, progress)
    return open_merge(get_datafolder(f"{work}/shards"), data, summary, settings)


def _check_work_dir(work: str, data: str, out: Path) -> None:
    """The work folder is neither --out, nor the data, nor inside it, nor holding it."""
    if "://" in work or "://" in data:
        return
    folder, source = Path(work).resolve(), Path(data).resolve()
    if folder == out.resolve() or folder.is_relative_to(source) or source.is_relative_to(folder):
        raise InputError(
            f"{work}: the work folder must be outside DATA, not hold it, and not be --out "
            "(set --work-dir)"
        )


def _manifest(
    work: str,
    data: str,
    read: ReadOptions,
    scan: tuple[tuple[str, ...] | None, tuple[str, ...]],
    tasks: int,
) -> str:
    """Record the scan's settings in the work folder (refusing a folder of another scan)
    and return their digest, which every shard carries."""
    detectors, excludes = scan
    settings = {
        "tool": __version__,
        "data": data if "://" in data else str(Path(data).resolve()),
        "read": asdict(read),
        "detectors": sorted(detectors) if detectors else None,
        "excludes": list(excludes),
        "tasks": tasks,
    }
    folder = get_datafolder(work)
    if not folder.isfile(MANIFEST):
        with folder.open(MANIFEST, "wt") as handle:
            json.dump(settings, handle, indent=2, sort_keys=True)
        return settings_digest(settings)
    with folder.open(MANIFEST, "rt") as handle:
        earlier = json.load(handle)
    changed = sorted(k for k in settings | earlier if settings.get(k) != earlier.get(k))
    if changed:
        raise InputError(
            f"{work}: holds a scan with other {', '.join(changed)}; use another --work-dir, "
            "or delete it to start over"
        )
    return settings_digest(settings)


def _tasks(engine: EngineOptions) -> int:
    """--tasks, or by default one per core (local) or per CPU of the Ray cluster."""
    if engine.tasks:
        return engine.tasks
    if engine.executor == "ray":
        import ray

        return max(1, int(ray.cluster_resources().get("CPU", 1)))
    return resolve_jobs(0)


def build_executor(
    pipeline: list[Any], engine: EngineOptions, logging_dir: str
) -> PipelineExecutor:
    """The datatrove executor the options ask for (`engine.tasks` resolved)."""
    if engine.executor == "ray":
        return RayPipelineExecutor(
            pipeline, tasks=engine.tasks, workers=engine.workers or -1, logging_dir=logging_dir
        )
    if engine.executor == "slurm":
        return _slurm_executor(pipeline, engine, logging_dir, (engine.tasks, "codeeraser-scan"))
    workers = min(engine.workers or resolve_jobs(0), engine.tasks)
    return QuietLocalExecutor(
        pipeline, tasks=engine.tasks, workers=workers, logging_dir=logging_dir
    )


class QuietLocalExecutor(LocalPipelineExecutor):  # type: ignore[misc]  # no type hints
    """datatrove's local executor, whose first task logs to the terminal only at -v (it
    always logs to its file under logs/logs/)."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1) -> Any:
        try:  # datatrove's tasks with a local rank above 0 log only errors to the terminal
            return super()._run_for_rank(rank, local_rank + (not _verbose()), node_rank)
        finally:
            quiet_loguru()


def _slurm_executor(
    pipeline: list[Any], engine: EngineOptions, logging_dir: str, job: tuple[int, str]
) -> PipelineExecutor:
    """A Slurm executor of `job` = (tasks, job name), with --slurm-* settings."""
    tasks, name = job
    extra = dict(item.partition("=")[::2] for item in engine.slurm_sbatch)
    return SlurmPipelineExecutor(
        pipeline,
        tasks=tasks,
        time=engine.slurm_time,
        partition=engine.slurm_partition,
        workers=engine.workers or -1,
        job_name=name,
        logging_dir=logging_dir,
        sbatch_args=extra,
    )


def _submit_slurm(
    scan: PipelineExecutor,
    engine: EngineOptions,
    work: str,
    out: Path,
    origin: tuple[str, str],
) -> None:
    """Submit the scan's job array and a merge job that runs once every task finished;
    `origin` is (DATA, the settings digest)."""
    data, settings = origin
    step = MergeFindings(f"{work}/shards", str(out.resolve()), data=data, settings=settings)
    merge = _slurm_executor([step], engine, f"{work}/logs-merge", (1, "codeeraser-merge"))
    merge.depends = scan
    merge.run()  # submits the scan first (its unfinished tasks), then the merge after it
    ui.console.print(
        f"Submitted Slurm job {scan.job_id} ({engine.tasks} tasks) and merge job "
        f"{merge.job_id}: the findings will be written to {out}. After a failure, rerun "
        "the same command: finished tasks are not scanned again."
    )


def _run(executor: PipelineExecutor, tasks: int, progress: Progress | None) -> None:
    """Run the tasks, reporting finished ones as they appear; all must finish."""
    quiet_loguru()
    done = threading.Event()
    watcher = threading.Thread(target=_watch, args=(executor, tasks, progress, done))
    watcher.start()
    try:
        executor.run()
    finally:
        done.set()
        watcher.join()
    missing = executor.get_incomplete_ranks()
    if missing:
        raise CodeEraserError(
            f"{len(missing)} of {tasks} scan tasks did not finish (see their logs, e.g. "
            f"logs/logs/task_{missing[0]:05d}.log in the work folder); fix the cause and "
            "rerun the same command: finished tasks are not scanned again"
        )


def _watch(
    executor: PipelineExecutor, tasks: int, progress: Progress | None, done: threading.Event
) -> None:
    """Poll the completion markers every half second and report new ones."""
    reported = 0
    while progress is not None:
        finished = tasks - len(executor.get_incomplete_ranks())
        if finished > reported:
            progress(finished - reported, tasks)
            reported = finished
        if done.wait(0.5):
            return


def _verbose() -> bool:
    return logging.getLogger().getEffectiveLevel() <= logging.INFO


def quiet_loguru() -> None:
    """datatrove logs through loguru: to the terminal at -v, else only its warnings."""
    logger.remove()
    logger.add(sys.stderr, level="INFO" if _verbose() else "WARNING", diagnose=False)


@contextmanager
def _ray_session(engine: EngineOptions) -> Iterator[None]:
    """For --executor ray: connect to RAY_ADDRESS's cluster, or start a local runtime."""
    if engine.executor != "ray":
        yield
        return
    if importlib.util.find_spec("ray") is None:
        raise InputError("--executor ray needs Ray: pip install 'codeeraser[scale-ray]'")
    with warnings.catch_warnings():
        # datatrove 0.10 uses Ray arguments that Ray 2.5x deprecates; the warning is raised
        # in a thread of datatrove's, where an "error" filter would hang the run silently
        warnings.filterwarnings("ignore", "placement_group", DeprecationWarning)
        with _ray_runtime():
            yield


@contextmanager
def _ray_runtime() -> Iterator[None]:
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(
        address=os.environ.get("RAY_ADDRESS") or None,
        runtime_env={"env_vars": {"LOGURU_DIAGNOSE": "NO"}},
        include_dashboard=False,
        log_to_driver=_verbose(),
    )
    try:
        yield
    finally:
        ray.shutdown()
