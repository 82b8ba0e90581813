"""`codeeraser scan --engine datatrove`: the local engine's file, resumable, on every
executor (Slurm through a stand-in `sbatch`; Ray in tests/gate/test_scale_ray.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gate.cli import cli
from tests.audit.scale_corpus import write_folder

BIN = Path(sys.executable).parent


def _scan(*args: str) -> Result:
    return CliRunner().invoke(cli, ["scan", *args])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, str]:
    """A generated folder, the local engine's findings file and its summary line."""
    root = tmp_path_factory.mktemp("scale")
    data = write_folder(root / "data", 1200)
    result = _scan(str(data), "--out", str(root / "local.jsonl"), "--jobs", "1")
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stderr.splitlines() if " samples (" in x)
    return data, (root / "local.jsonl").read_bytes(), line.split(" in ")[0]


def test_the_datatrove_engine_writes_the_local_engines_file(
    corpus: tuple[Path, bytes, str], tmp_path: Path
) -> None:
    data, expected, counts = corpus
    out = tmp_path / "findings.jsonl"
    result = _scan(str(data), "--out", str(out), "--engine", "datatrove", "--tasks", "3")
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == expected
    assert counts in result.stderr  # the same summary: samples and characters
    assert result.stdout.strip() == str(out)
    work = tmp_path / "findings.work"
    assert sorted(p.name for p in (work / "logs" / "completions").iterdir()) == [
        "00000",
        "00001",
        "00002",
    ]


def _kill_in_task_2(data: Path, out: Path, work: Path) -> subprocess.CompletedProcess[str]:
    """The same command, in a process that kills itself (SIGKILL) while task 2 runs."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        import gate.scale as scale

        def kill_in_task_2(data, rank, world_size):
            for doc in data:
                if rank == 2:
                    os.kill(os.getpid(), signal.SIGKILL)
                yield doc

        build = scale.build_executor
        scale.build_executor = lambda p, e, d: build([*p, kill_in_task_2], e, d)
        from gate.cli import main
        sys.argv = ["codeeraser", "scan", {str(data)!r}, "--out", {str(out)!r},
                    "--engine", "datatrove", "--tasks", "4", "--workers", "1",
                    "--work-dir", {str(work)!r}]
        main()
        """
    )
    env = dict(os.environ, LOGURU_DIAGNOSE="NO")
    log = out.with_suffix(".log")
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", script], stderr=stderr, env=env, start_new_session=True
        )
        status = process.wait(timeout=300)
    with contextlib.suppress(ProcessLookupError):  # datatrove's manager outlives its parent
        os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(process.args, status, "", log.read_text())


def test_a_killed_scan_resumes_without_rescanning_finished_tasks(
    corpus: tuple[Path, bytes, str], tmp_path: Path
) -> None:
    data, expected, _ = corpus
    out, work = tmp_path / "findings.jsonl", tmp_path / "work"
    killed = _kill_in_task_2(data, out, work)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not out.exists()
    done = sorted(p.name for p in (work / "logs" / "completions").iterdir())
    assert done == ["00000", "00001"]  # tasks 0 and 1 finished before the kill
    kept = [
        work / "logs" / "completions" / "00000",
        work / "shards" / "00001.jsonl",
        work / "shards" / "00001.json",
        work / "logs" / "logs" / "task_00000.log",
    ]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in kept}
    args = ["--out", str(out), "--engine", "datatrove", "--tasks", "4", "--workers", "1"]
    result = _scan(str(data), *args, "--work-dir", str(work))
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == expected
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in kept} == before  # not rerun
    assert len(list((work / "logs" / "completions").iterdir())) == 4


def test_a_work_folder_of_another_scan_is_refused(
    corpus: tuple[Path, bytes, str], tmp_path: Path
) -> None:
    data, _, _ = corpus
    out = tmp_path / "findings.jsonl"
    args = [str(data), "--out", str(out), "--engine", "datatrove"]
    assert _scan(*args, "--tasks", "2").exit_code == 0
    result = _scan(*args, "--tasks", "2", "--exclude", "a/*")
    assert result.exit_code == 2
    assert "holds a scan with other excludes" in result.stderr
    result = _scan(*args, "--tasks", "3")
    assert "holds a scan with other tasks" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--executor", "ray"], "need --engine datatrove"),
        (["--tasks", "3"], "need --engine datatrove"),
        (["--engine", "datatrove", "--executor", "slurm"], "needs --slurm-partition and --tasks"),
    ],
)
def test_engine_options_are_checked(
    corpus: tuple[Path, bytes, str], tmp_path: Path, args: list[str], message: str
) -> None:
    result = _scan(str(corpus[0]), "--out", str(tmp_path / "f.jsonl"), *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_paths_are_checked(corpus: tuple[Path, bytes, str], tmp_path: Path) -> None:
    data = corpus[0]
    result = _scan("s3://bucket/train", "--out", str(tmp_path / "f.jsonl"))
    assert result.exit_code == 2
    assert "needs --engine datatrove" in result.stderr
    inside = ["--engine", "datatrove", "--work-dir", str(data / "work")]
    result = _scan(str(data), "--out", str(tmp_path / "f.jsonl"), *inside)
    assert result.exit_code == 2
    assert "must be outside DATA" in result.stderr
    result = _scan(str(tmp_path / "missing"), "--engine", "datatrove")
    assert result.exit_code == 2
    assert "no such file or folder" in result.stderr


def _fake_slurm(folder: Path) -> Path:
    """`sbatch` that keeps each script and its arguments; `scontrol` naming this host."""
    folder.mkdir()
    (folder / "sbatch").write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            n=$(ls {folder}/*.sh 2>/dev/null | wc -l)
            n=$((n + 100))
            for last; do :; done
            cp "$last" {folder}/job-$n.sh
            echo "$@" > {folder}/job-$n.args
            echo "Submitted batch job $n"
            """
        )
    )
    (folder / "scontrol").write_text("#!/bin/sh\necho localhost\n")
    for name in ("sbatch", "scontrol"):
        (folder / name).chmod(0o755)
    return folder


def test_slurm_submits_an_array_and_a_merge_job_that_writes_the_file(
    corpus: tuple[Path, bytes, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, expected, _ = corpus
    slurm = _fake_slurm(tmp_path / "slurm")
    monkeypatch.setenv("PATH", f"{slurm}:{BIN}:{os.environ['PATH']}")
    out, work = tmp_path / "findings.jsonl", tmp_path / "work"
    args = ["--engine", "datatrove", "--executor", "slurm", "--tasks", "3"]
    args += ["--slurm-partition", "cpu", "--slurm-sbatch", "account=audit"]
    result = _scan(str(data), "--out", str(out), "--work-dir", str(work), *args)
    assert result.exit_code == 0, result.output
    assert "Submitted Slurm job 100 (3 tasks) and merge job" in result.stderr
    assert not out.exists()  # the merge job writes it
    scan_job = (slurm / "job-100.sh").read_text()
    assert "#SBATCH --array=0-2" in scan_job
    assert "#SBATCH --partition=cpu" in scan_job
    assert "#SBATCH --account=audit" in scan_job
    merge_args = next(
        p.read_text() for p in slurm.glob("*.args") if "--dependency=afterok:100" in p.read_text()
    )
    assert merge_args
    env = dict(os.environ, SLURM_NODELIST="localhost", RUN_OFFSET="0", LOGURU_DIAGNOSE="NO")
    for rank, folder in ((0, "logs"), (1, "logs"), (2, "logs"), (0, "logs-merge")):
        job = dict(env, SLURM_ARRAY_TASK_ID=str(rank))
        pickled = str(work / folder / "executor.pik")
        subprocess.run([BIN / "launch_pickled_pipeline", pickled], env=job, check=True)
    assert out.read_bytes() == expected
