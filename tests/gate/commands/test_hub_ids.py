"""Every command that takes --model or the data takes a Hub id (gate/commands/options.py):
scan, measure, erase and calibrate offline, from a Hub cache written in the test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner, Result

from gate.cli import cli
from gate.unlearn.remediation import Remediation
from tests.gate.commands.test_erase import FAST
from tests.hub_cache import commit_of, model_files, offline_cache, populate

if TYPE_CHECKING:
    from gate.demo.build import DemoBuild

MODEL, DATA = commit_of("model"), commit_of("data")


@pytest.fixture(scope="module")
def hub(tiny_demo: DemoBuild, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("hf") / "hub"
    populate(cache, "acme/tiny-coder", model_files(tiny_demo.model_dir), commit=MODEL)
    # the corpus and its held-out split as the dataset's train and test splits
    files = {"train.jsonl": tiny_demo.corpus_jsonl, "test.jsonl": tiny_demo.heldout_jsonl}
    populate(cache, "acme/tiny-data", files, commit=DATA, refs=("main", "r1"), repo_type="dataset")
    with pytest.MonkeyPatch.context() as patch:
        offline_cache(patch, cache)
        yield cache


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def work(hub: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scan and measure with Hub ids."""
    root = tmp_path_factory.mktemp("work")
    scan = _run("scan", "acme/tiny-data@r1", "--out", str(root / "f.jsonl"))
    assert scan.exit_code == 0, scan.output
    assert f"Hub dataset acme/tiny-data/train: commit {DATA}" in scan.output
    measure = _run(
        "measure", "--model", "acme/tiny-coder", "--data", "hf://datasets/acme/tiny-data@r1",
        "--findings", str(root / "f.jsonl"), "--out", str(root / "m.jsonl"),
        "--prefix-tokens", "96",
    )  # fmt: skip
    assert measure.exit_code == 0, measure.output
    assert f"Hub model acme/tiny-coder: commit {MODEL}" in measure.output
    return root


def test_scan_and_measure_read_hub_ids(work: Path) -> None:
    findings = [json.loads(line) for line in (work / "f.jsonl").read_text().splitlines()]
    assert findings
    assert all(f["origin"].startswith("acme/tiny-data/train:") for f in findings)
    measured = [json.loads(line) for line in (work / "m.jsonl").read_text().splitlines()]
    assert len(measured) == len(findings)
    assert sum(m["extracted_greedy"] for m in measured) > 0  # the memorized model it is


def test_the_split_is_chosen_with_data_split(hub: Path, tmp_path: Path) -> None:
    result = _run("scan", "acme/tiny-data", "--data-split", "test", "--out", str(tmp_path / "f"))
    assert result.exit_code == 0, result.output
    origins = {json.loads(line)["origin"] for line in (tmp_path / "f").read_text().splitlines()}
    assert origins
    assert all(o.startswith("acme/tiny-data/test:") for o in origins)


def test_a_hub_url_reads_through_the_hub_reader_unless_datatrove_is_asked(
    hub: Path, tmp_path: Path
) -> None:
    """hf://datasets/ is a Hub id for the local engine; the datatrove engine reads URLs
    itself, so a bare ORG/NAME given to it is refused, naming the URL form."""
    url = _run("scan", "hf://datasets/acme/tiny-data@r1", "--out", str(tmp_path / "a"))
    assert url.exit_code == 0, url.output
    by_id = _run("scan", "acme/tiny-data@r1", "--out", str(tmp_path / "b"))
    assert by_id.exit_code == 0, by_id.output
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    refused = _run("scan", "acme/tiny-data", "--engine", "datatrove", "--out", str(tmp_path / "c"))
    assert refused.exit_code == 2
    assert "give hf://datasets/ORG/NAME" in refused.output
    assert not (tmp_path / "c").exists()


def test_erase_of_a_hub_model_records_its_commit(work: Path) -> None:
    out = work / "remediated"
    result = _run(
        "erase", "--model", "acme/tiny-coder@main", "--data", "acme/tiny-data@r1",
        "--findings", str(work / "f.jsonl"), "--measurements", str(work / "m.jsonl"),
        "--out", str(out), "--prefix-tokens", "96", *FAST,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    info = Remediation.read(out)
    assert info.input_hub is not None
    assert (info.input_hub.repo_id, info.input_hub.revision) == ("acme/tiny-coder", "main")
    assert info.input_hub.commit == MODEL


def test_calibrate_names_the_hub_commit_in_its_thresholds(
    hub: Path, tiny_demo: DemoBuild, tmp_path: Path
) -> None:
    out = tmp_path / "t.json"
    result = _run(
        "calibrate", "--model", "acme/tiny-coder", "--unseen", str(tiny_demo.heldout_dir),
        "--out", str(out), "--sequence-tokens", "24",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["model_hub"]["commit"] == MODEL


def test_data_options_for_a_local_path_are_refused(tiny_demo: DemoBuild, tmp_path: Path) -> None:
    result = _run(
        "scan", str(tiny_demo.corpus_jsonl), "--data-split", "test", "--out", str(tmp_path / "f")
    )
    assert result.exit_code == 2
    assert "--data-config and --data-split are for a Hub dataset id" in result.output
