"""Sharded measuring: two ranks (threads here, processes under `accelerate launch`)
give exactly the single-process results, each rank running only its own batches."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from audit import distributed, extraction
from audit.distributed import LOCAL, Shard, device_for, launched_world_size
from audit.errors import InputError
from audit.extraction import MeasureConfig, score_probes
from gate.cli import cli
from tests.audit import tiny_lm
from tests.audit.test_extraction import make_probes

ROOT = Path(__file__).resolve().parents[2]


def test_local_shard_owns_everything_and_gathers_its_own_part() -> None:
    assert LOCAL.is_main
    assert not LOCAL.distributed
    assert LOCAL.mine([1, 2, 3]) == [1, 2, 3]
    assert LOCAL.gather({1: "a"}) == {1: "a"}
    assert LOCAL.broadcast("x") == "x"


def test_shares_are_round_robin_disjoint_and_cover_the_list() -> None:
    ranks = [Shard(rank=r, world=3) for r in range(3)]
    items = list(range(10))
    shares = [s.mine(items) for s in ranks]
    assert shares == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]


def test_world_size_comes_from_the_launcher_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert launched_world_size() == 1
    assert distributed.current() is LOCAL
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert launched_world_size() == 4


def test_a_launched_run_without_accelerate_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setitem(sys.modules, "accelerate", None)  # import accelerate fails
    with pytest.raises(InputError, match=r"codeeraser\[dist\]"):
        distributed.current()


def test_device_follows_the_launcher() -> None:
    gpu = Shard(rank=1, world=2, device="cuda")
    assert device_for("auto", gpu) == "cuda"
    assert device_for("auto", LOCAL) == "auto"
    assert device_for("mps", LOCAL) == "mps"
    with pytest.raises(InputError, match="--device cpu does not match"):
        device_for("cpu", gpu)


def _thread_shards(world: int) -> list[Shard]:
    """Shards whose gather is an all-gather between threads (one thread per rank)."""
    slots: list[Any] = [None] * world
    meeting = threading.Barrier(world)

    def make(rank: int) -> Shard:
        def gather(part: list[Any]) -> list[Any]:
            slots[rank] = part[0]
            meeting.wait()
            out = list(slots)
            meeting.wait()  # nobody overwrites a slot before everyone has read them
            return out

        return Shard(rank=rank, world=world, gather_objects=gather)

    return [make(r) for r in range(world)]


def test_two_ranks_give_the_single_process_scores_and_split_the_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tiny_lm.gpt2()
    tok = tiny_lm.tokenizer()
    probes = make_probes(model)
    # A small budget makes several teacher-forced chunks and sampled batches to share out.
    config = MeasureConfig(batch_tokens=120, samples=3, temperature=1.5, seed=7)
    alone = score_probes(model, tok, probes, config)

    ran: dict[int, list[int]] = {0: [], 1: []}
    real = extraction._teacher_forced

    def recording(model: Any, chunk: list[Any], *args: Any, **kwargs: Any) -> Any:
        rank = int(threading.current_thread().name.removeprefix("rank"))
        ran[rank].extend(int(p.finding_id[1:]) for p in chunk)
        return real(model, chunk, *args, **kwargs)

    monkeypatch.setattr(extraction, "_teacher_forced", recording)
    results: dict[int, list[Any]] = {}

    def run(shard: Shard) -> None:
        results[shard.rank] = score_probes(model, tok, probes, config, shard=shard)

    threads = [
        threading.Thread(target=run, args=(s,), name=f"rank{s.rank}") for s in _thread_shards(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results[0] == alone
    assert results[1] == alone
    assert ran[0], "rank 0 scored a share"
    assert ran[1], "rank 1 scored a share"
    assert sorted(ran[0] + ran[1]) == list(range(len(probes))), "every probe exactly once"


def _launch(*args: str) -> list[str]:
    """`accelerate launch` with two processes. On a machine without CUDA, torchrun's
    multi-process launch (`--multi_gpu`) gives CPU processes and the gloo backend
    (accelerate 1.15 starts a single process for `--cpu` unless mpirun is used)."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    fixed = ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [*launcher, "--multi_gpu", "--num_processes", "2", *fixed, *args]


def launch_env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # two processes on two cores: one thread each
        "PYTHONPATH": str(ROOT),
        "ACCELERATE_USE_CPU": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }


@pytest.mark.slow
def test_measure_under_accelerate_launch_writes_the_single_process_file(
    tiny_demo: Any, tmp_path: Path
) -> None:
    args = [
        "measure",
        "--model", str(tiny_demo.model_dir),
        "--data", str(tiny_demo.corpus_dir),
        "--findings", str(tiny_demo.planted),
        "--batch-tokens", "256",  # several batches for two processes to share
        "--samples", "2",
    ]  # fmt: skip
    one = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "one.jsonl")])
    assert one.exit_code == 0, one.output
    two = subprocess.run(
        _launch("-m", "gate", *args, "--out", str(tmp_path / "two.jsonl")),
        env=launch_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert two.stdout.strip().splitlines() == [str(tmp_path / "two.jsonl")], "rank 0 alone"
    assert two.stderr.count("findings measured in") == 1, "one summary"
    assert "2 processes" in two.stderr
