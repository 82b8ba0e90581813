"""`codeeraser scan --engine datatrove --executor ray` on a local Ray runtime: the local
engine's file. Opt-in (Ray is a large install and its runtime takes a while to start):
CODEERASER_TEST_RAY=1 with `pip install 'codeeraser[scale-ray]'`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from gate.cli import cli
from tests.audit.scale_corpus import write_folder, write_record_corpora

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(
        os.environ.get("CODEERASER_TEST_RAY") != "1", reason="opt-in: CODEERASER_TEST_RAY=1"
    ),
]


def test_ray_tasks_write_the_local_engines_file(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    folder = write_folder(tmp_path / "data", 1500)
    shards = write_record_corpora(tmp_path / "records", 300)["parquet_folder"]
    for data, extra in ((folder, []), (shards, ["--format", "parquet"])):
        local, remote = tmp_path / f"{data.name}.local.jsonl", tmp_path / f"{data.name}.ray.jsonl"
        result = CliRunner().invoke(cli, ["scan", str(data), "--out", str(local), *extra])
        assert result.exit_code == 0, result.output
        args = ["--engine", "datatrove", "--executor", "ray", "--tasks", "3", *extra]
        result = CliRunner().invoke(cli, ["scan", str(data), "--out", str(remote), *args])
        assert result.exit_code == 0, result.output
        assert remote.read_bytes() == local.read_bytes() != b""
        completions = tmp_path / f"{data.name}.ray.work" / "logs" / "completions"
        assert len(list(completions.iterdir())) == 3
