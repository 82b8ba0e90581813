"""bench/gpu_erase.py: the GPU benchmark's tiny CPU path runs end to end, and without
CUDA the GPU run refuses cleanly (the GPU run itself needs a lent device machine)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tests.bench import load_script


def _script() -> ModuleType:
    return load_script("gpu_erase")


def test_the_tiny_cpu_run_trains_every_window_and_records_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "gpu_erase.json"
    args = ["--tiny", "--device", "cpu", "--k", "3", "--window", "192", "--epochs", "2"]
    assert _script().main([*args, "--secret-tokens", "8", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["epochs"] == 2  # no secret counts as forgotten: every epoch runs
    assert result["steps"] == 2  # k = 3 windows in one step per epoch
    assert len(result["seconds_per_epoch"]) == 2
    assert result["seconds_per_sample"] == pytest.approx(result["unlearn_seconds"] / 3)
    assert result["mixed_precision"] == "bf16"
    assert result["kl_reference"]["kind"] == "cached-full"
    assert result["losses_last_epoch"]["ce_secret"] > 0  # S is not empty: the ascent ran
    assert result["peak_gpu_memory_bytes"] == 0
    assert 100_000 < result["parameters"] < 200_000


def test_without_cuda_the_gpu_run_refuses_with_exit_code_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu_erase.json"
    assert _script().main(["--out", str(out)]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert not out.exists()
