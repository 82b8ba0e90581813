"""Unlearning through Accelerate: mixed precision in one process, the example configs,
and `codeeraser erase` on two processes (DDP over gloo) that completes and forgets."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from audit.corpus import CorpusSpec
from audit.distributed import Shard
from audit.errors import InputError
from audit.findings import Finding
from gate.cli import cli
from gate.unlearn.accelerated import AcceleratedEngine, engine_for
from gate.unlearn.data import ForgetWindow, RetainWindow
from gate.unlearn.engine import Engine
from gate.unlearn.erase import erase_model
from gate.unlearn.remediation import Remediation
from gate.unlearn.settings import EraseOptions, UnlearnConfig
from gate.unlearn.trainer import Unlearner
from tests.audit.test_distributed import _launch, launch_env
from tests.gate.unlearn.conftest import micro_model
from tests.gate.unlearn.test_trainer import THRESHOLDS, Scripted, _m

VOCAB = 320
ROOT = Path(__file__).resolve().parents[3]
Data = tuple[list[Finding], list[ForgetWindow], list[RetainWindow]]


@pytest.fixture
def fresh_accelerate() -> Iterator[None]:
    """Accelerate keeps its state per process: start and leave each test without one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


@pytest.mark.usefixtures("fresh_accelerate")
def test_bf16_autocast_through_accelerate_trains_and_keeps_float32_weights(
    forget_and_retain: Data, tmp_path: Path
) -> None:
    findings, windows, retain = forget_and_retain
    model = micro_model(VOCAB)
    start = [p.detach().clone() for p in model.parameters()]
    config = UnlearnConfig(lr=1e-2, batch_size=2, epochs=2, patience=0, mixed_precision="bf16")
    engine = engine_for(config)
    assert isinstance(engine, AcceleratedEngine)
    assert engine.mixed_precision == "bf16"
    measure = Scripted(model, [{f.id: (0.9, True) for f in findings}])
    result = Unlearner(
        model,
        windows,
        retain,
        before=[_m(f.id, ma=0.9, extracted=True) for f in findings],
        measure=measure,
        thresholds=THRESHOLDS,
        config=config,
        pad_id=0,
        engine=engine,
        best_dir=tmp_path,
    ).run()
    assert result.steps == 4
    assert all(torch.isfinite(torch.tensor(list(h.loss.values()))).all() for h in result.history)
    assert all(p.dtype == torch.float32 for p in model.parameters()), "master weights"
    # nothing improved on the scripted leak, so the best state (the start) came back
    assert result.best_epoch == 0
    assert all(torch.equal(a, b) for a, b in zip(start, model.parameters(), strict=True))


def _env_of(config: Path) -> dict[str, str]:
    """The environment `accelerate launch --config_file CONFIG` gives each process."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    parsed = launch_command_parser().parse_args(["--config_file", str(config), "-m", "gate"])
    args, _, _ = _validate_launch_command(parsed)
    env: dict[str, str] = prepare_multi_gpu_env(args)
    return env


def test_the_example_fsdp_config_gives_an_fsdp2_full_shard_plugin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checked up to the plugin the processes would build; FSDP itself needs GPUs."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    env = _env_of(ROOT / "examples" / "accelerate" / "fsdp.yaml")
    assert env["ACCELERATE_USE_FSDP"] == "true"
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True


def test_the_example_ddp_config_launches_eight_processes() -> None:
    env = _env_of(ROOT / "examples" / "accelerate" / "ddp.yaml")
    assert "ACCELERATE_USE_FSDP" not in env
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"


@pytest.mark.slow
def test_erase_on_two_processes_completes_and_forgets(tiny_demo: Any, tmp_path: Path) -> None:
    before = tmp_path / "before.jsonl"
    measured = CliRunner().invoke(
        cli,
        [
            "measure",
            "--model", str(tiny_demo.model_dir),
            "--data", str(tiny_demo.corpus_dir),
            "--findings", str(tiny_demo.planted),
            "--out", str(before),
        ],
    )  # fmt: skip
    assert measured.exit_code == 0, measured.output
    out = tmp_path / "erased"
    args = [
        "-m", "gate", "erase",
        "--model", str(tiny_demo.model_dir),
        "--data", str(tiny_demo.corpus_dir),
        "--findings", str(tiny_demo.planted),
        "--measurements", str(before),
        "--out", str(out),
        "--lr", "1e-3", "--epochs", "30",  # forgets in about 6 epochs
        "--train-batch-tokens", "384",  # 3 windows per micro-batch: both processes train
    ]  # fmt: skip
    run = subprocess.run(
        _launch(*args),
        env=launch_env(),
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines() == [str(out)], "rank 0 alone prints the path"
    record = Remediation.read(out)
    assert record.processes == 2
    erased = [o for o in record.outcomes if o.before.extracted_greedy]
    assert erased, "the demo model gave secrets away before"
    assert all(o.after is not None and not o.after.extracted_greedy for o in record.outcomes)
    assert all(o.forgotten for o in record.outcomes), record.stop_reason
    assert sorted(p.name for p in tmp_path.iterdir()) == ["before.jsonl", "erased"]


class _TwoProcesses(Engine):
    """An engine that says it is rank 0 of two (nothing is launched)."""

    @property
    def shard(self) -> Shard:
        return Shard(rank=0, world=2)


def test_resume_under_several_processes_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "API_KEY = 'abcdefghijklmnop'\n"
    finding = Finding.create(
        sample_id="a.py", origin="a.py", text=text, start=11, end=27,
        secret_type="Test Key", detector="test",
    )  # fmt: skip
    measured = replace(_m(finding.id, ma=1.0, extracted=True), memorized=True)
    monkeypatch.setattr("gate.unlearn.erase.engine_for", lambda config: _TwoProcesses())
    model = tmp_path / "model"
    model.mkdir()
    with pytest.raises(InputError, match="--resume works in a single process"):
        erase_model(
            model, CorpusSpec(tmp_path), [finding], [measured], thresholds=THRESHOLDS,
            out_dir=tmp_path / "out", options=EraseOptions(resume=True),
        )  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
