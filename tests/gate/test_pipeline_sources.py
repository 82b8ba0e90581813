"""The gate on models and data that are not plain local folders: Hub ids resolved offline
from a Hub cache written in the test, and a GGUF checkpoint. The records, reports,
remediation.json and model cards they leave name what was audited."""

from __future__ import annotations

import html
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from click.testing import CliRunner, Result
from huggingface_hub import ModelCard, ModelCardData
from transformers import AutoModelForCausalLM

from audit.model import load_model
from gate.cli import cli
from gate.record import fingerprint_path
from gate.run_folder import REMEDIATED
from tests.audit.gguf_files import write_gpt2
from tests.gate.demo.test_build import secret_values
from tests.gate.test_pipeline import _policy
from tests.hub_cache import commit_of, model_files, offline_cache, populate

if TYPE_CHECKING:
    from gate.demo.build import DemoBuild

V1 = commit_of("tiny-coder v1")
DATA = commit_of("tiny-data main")
CARD = "---\nlicense: apache-2.0\ntags:\n- code\n---\n# Tiny coder\n\nA demo model.\n"


@pytest.fixture(scope="module")
def hub(tiny_demo: DemoBuild, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A Hub cache with the tiny demo model (and, as a full clone would leave them, a
    pickle and a code file that a Hub id never fetches) and its corpus as a dataset;
    HF_HUB_OFFLINE=1 for the module."""
    cache = tmp_path_factory.mktemp("hf") / "hub"
    extra: dict[str, bytes | Path] = {
        "README.md": CARD.encode(),
        "pytorch_model.bin": b"not loaded",
        "modeling_tiny.py": b"raise SystemExit('remote code ran')\n",
    }
    files = {**model_files(tiny_demo.model_dir), **extra}
    populate(cache, "acme/tiny-coder", files, commit=V1, refs=("main", "v1"))
    data = {"data/train-00000.jsonl": tiny_demo.corpus_jsonl}
    populate(cache, "acme/tiny-data", data, commit=DATA, repo_type="dataset")
    with pytest.MonkeyPatch.context() as patch:
        offline_cache(patch, cache)
        yield cache


def _gate(model: str, data: str, policy: Path, out: Path, *extra: str) -> Result:
    args = ["gate", "--model", model, "--data", data, "--policy", str(policy), "--out", str(out)]
    return CliRunner().invoke(cli, [*args, *extra])


@pytest.fixture(scope="module")
def hub_run(
    hub: Path, tiny_demo: DemoBuild, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Result, Path, str]:
    tmp = tmp_path_factory.mktemp("gate-hub")
    blobs = fingerprint_path(hub / "models--acme--tiny-coder" / "blobs")
    result = _gate(
        "acme/tiny-coder@v1", "hf://datasets/acme/tiny-data", _policy(tmp), tmp / "out",
        "--heldout", str(tiny_demo.heldout_dir),
    )  # fmt: skip
    return result, tmp / "out", blobs


def test_a_gate_on_hub_ids_names_the_commits_it_audited(
    hub_run: tuple[Result, Path, str], hub: Path, tiny_demo: DemoBuild, tmp_path: Path
) -> None:
    result, out, blobs = hub_run
    assert result.exit_code == 0, result.output
    assert f"Hub model acme/tiny-coder@v1: commit {V1}" in result.output
    assert f"Hub dataset acme/tiny-data/train: commit {DATA}" in result.output
    record = json.loads((out / "record.json").read_text())
    assert record["outcome"] == "remediated"
    assert record["model"]["hub"] == {
        "repo_id": "acme/tiny-coder", "repo_type": "model", "revision": "v1", "commit": V1,
        "config": None, "split": None,
    }  # fmt: skip
    # the fetched files (not the pickle, not the code) are the demo model's and its card
    local = tmp_path / "model"
    shutil.copytree(tiny_demo.model_dir, local)
    (local / "README.md").write_text(CARD)
    assert record["model"]["sha256"] == fingerprint_path(local)
    assert record["corpus"]["hub"]["commit"] == DATA
    assert record["corpus"]["hub"]["split"] == "train"
    origins = {f["origin"] for f in record["findings"]}
    assert origins
    assert all(o.startswith("acme/tiny-data/train:") for o in origins)
    remediation = json.loads((out / REMEDIATED / "remediation.json").read_text())
    assert remediation["input_hub"]["commit"] == V1
    report = (out / "report.html").read_text()
    assert f"at commit {V1} (revision v1)" in report
    assert f"at commit {DATA} (revision main, split train; streamed)" in report
    # the Hub cache is only read
    assert fingerprint_path(hub / "models--acme--tiny-coder" / "blobs") == blobs


def test_the_remediated_hub_model_carries_its_card_and_no_code_or_pickle(
    hub_run: tuple[Result, Path, str],
) -> None:
    _, out, _ = hub_run
    folder = out / REMEDIATED
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "config.json", "generation_config.json", "model.safetensors",
        "remediation.json", "tokenizer.json", "tokenizer_config.json",
    ]  # fmt: skip
    card = ModelCard((folder / "README.md").read_text())
    assert isinstance(card.data, ModelCardData)
    assert card.data.license == "apache-2.0"  # the input's card, kept
    assert card.data.tags == ["code", "codeeraser"]
    assert card.data.base_model == "acme/tiny-coder"
    assert "# Tiny coder\n\nA demo model." in card.text
    assert "**Verdict: PASSED after remediation**" in card.text
    assert f"[`acme/tiny-data`](https://huggingface.co/datasets/acme/tiny-data/tree/{DATA})" in (
        card.text
    )
    record = json.loads((out / "record.json").read_text())
    assert f"`{record['remediated_model']['sha256']}`" in card.text
    _check_example(folder / "README.md")
    # the hash the card names is the folder's files but the card and remediation.json
    exclude = ("README.md", "remediation.json")
    assert fingerprint_path(folder, exclude=exclude) == record["remediated_model"]["sha256"]


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "model-card.md"


def _check_example(card: Path) -> None:
    """docs/hub.md shows examples/model-card.md, a card this test rendered (rewritten
    with CODEERASER_UPDATE_GOLDEN=1): it must have the sections a card has now."""
    text = card.read_text()
    if os.environ.get("CODEERASER_UPDATE_GOLDEN") == "1":
        EXAMPLE.write_text(text)
    example = EXAMPLE.read_text()
    structure = [line for line in text.splitlines() if line.startswith(("#", "|---", "<!--"))]
    assert [line for line in example.splitlines() if line.startswith(("#", "|---", "<!--"))] == (
        structure
    ), "the model card changed: rerun this test with CODEERASER_UPDATE_GOLDEN=1"
    assert _metadata_keys(example) == _metadata_keys(text)


def _metadata_keys(text: str) -> list[str]:
    return sorted(yaml.safe_load(text.split("---\n", 2)[1]))


def test_no_secret_reaches_the_outputs_of_a_hub_run(
    hub_run: tuple[Result, Path, str], tiny_demo: DemoBuild
) -> None:
    result, out, _ = hub_run
    forms = {f for v in secret_values(tiny_demo) for f in (v, html.escape(v), json.dumps(v)[1:-1])}
    texts = {"terminal": result.output}
    for path in out.rglob("*"):
        if path.is_file() and not path.name.endswith(".safetensors"):
            texts[str(path)] = path.read_text(errors="replace")
    assert [name for name, text in texts.items() if any(f in text for f in forms)] == []


def test_a_revision_that_is_not_in_the_cache_is_exit_2_and_one_line(
    hub: Path, tiny_demo: DemoBuild, tmp_path: Path
) -> None:
    result = _gate(
        "acme/tiny-coder@v2", str(tiny_demo.corpus_dir), _policy(tmp_path), tmp_path / "o"
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: acme/tiny-coder@v2: this revision of the Hub model is not in the local Hub "
        f"cache ({hub}) and HF_HUB_OFFLINE is set; fetch it once online, or give a revision "
        "that is cached, or a local path"
    ]
    assert not (tmp_path / "o").exists()
    data = _gate("acme/tiny-coder", "acme/tiny-data@v3", _policy(tmp_path), tmp_path / "o")
    assert data.exit_code == 2
    assert "acme/tiny-data@v3: this revision of the Hub dataset is not in" in data.output


def test_no_output_may_land_in_the_hub_cache_of_an_input(hub: Path, tmp_path: Path) -> None:
    snapshot = hub / "models--acme--tiny-coder" / "snapshots" / V1
    policy = _policy(tmp_path, remediate=False)
    for out, named in [
        (snapshot / "out", "is inside --model"),
        (hub / "models--acme--tiny-coder" / "blobs" / "out", "is inside --model (its Hub cache)"),
        (hub / "datasets--acme--tiny-data" / "x", "is inside --data (its Hub cache)"),
    ]:
        result = _gate("acme/tiny-coder", "acme/tiny-data", policy, out)
        assert result.exit_code == 2, result.output
        assert named in result.output
        assert not out.exists()
    (tmp_path / "f.jsonl").write_text("")
    measure = CliRunner().invoke(
        cli,
        ["measure", "--model", "acme/tiny-coder", "--data", "acme/tiny-data", "--findings",
         str(tmp_path / "f.jsonl"), "--out", str(snapshot / "m.jsonl")],
    )  # fmt: skip
    assert measure.exit_code == 2
    assert "is inside --model" in measure.output


def test_an_original_that_passes_gets_its_card_in_the_run_folder(
    hub: Path, tiny_demo: DemoBuild, tmp_path: Path
) -> None:
    policy = _policy(tmp_path, remediate=False, limit=1000)
    result = _gate("acme/tiny-coder", str(tiny_demo.corpus_dir), policy, tmp_path / "out")
    assert result.exit_code == 0, result.output
    card = ModelCard((tmp_path / "out" / "model-card.md").read_text())
    assert isinstance(card.data, ModelCardData)
    assert card.data.license == "apache-2.0"
    assert "# Tiny coder" in card.text
    assert "**Verdict: PASSED** under the policy" in card.text
    assert f"at commit `{V1}` (revision `main`)" in card.text
    snapshot = hub / "models--acme--tiny-coder" / "snapshots" / V1
    assert (snapshot / "README.md").read_text() == CARD  # the input's card is never written


def test_a_gguf_model_is_gated_and_its_erasure_written_as_safetensors(
    tiny_demo: DemoBuild, tmp_path: Path
) -> None:
    model = AutoModelForCausalLM.from_pretrained(str(tiny_demo.model_dir))
    gguf_file = write_gpt2(model, tiny_demo.model_dir / "tokenizer.json", tmp_path / "tiny.gguf")
    before = fingerprint_path(gguf_file)
    out = tmp_path / "out"
    result = _gate(
        str(gguf_file), str(tiny_demo.corpus_dir), _policy(tmp_path), out,
        "--heldout", str(tiny_demo.heldout_dir),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((out / "record.json").read_text())
    assert record["outcome"] == "remediated"
    assert record["sanity"]["original"]["passed"]  # the dequantized model knows its code
    assert record["verdict_before"]["results"][0]["value"] > 0  # and recites its secrets
    folder = out / REMEDIATED
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= {
        p.name for p in folder.iterdir()
    }
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config  # facts.md: it would make the next save fail
    reloaded = load_model(folder, device="cpu")
    reloaded.model.save_pretrained(str(tmp_path / "saved-again"))  # type: ignore[operator]
    assert (tmp_path / "saved-again" / "model.safetensors").is_file()
    assert fingerprint_path(gguf_file) == before
    assert "a local GGUF file" in (folder / "README.md").read_text()
