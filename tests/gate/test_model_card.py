"""The released model's card (gate/model_card.py), rendered from fake runs and parsed back
with huggingface_hub's ModelCard and ModelCardData."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from huggingface_hub import ModelCard, ModelCardData

from audit.hub import HubRevision
from gate.model_card import END, PASSED_CARD, START, render_card, write_model_card
from gate.record import RunRecord
from gate.run_folder import REMEDIATED
from tests.gate import fakes

THEIR_CARD = """---
license: apache-2.0
language:
- en
tags:
- code
datasets:
- acme/code
---
# Acme Coder

A small code model. Intended for completion of Python.

## Training

Trained on acme/code.
"""
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _metadata(text: str) -> dict[str, object]:
    assert text.startswith("---\n")
    block = text.split("---\n", 2)[1]
    data = yaml.safe_load(block)
    assert isinstance(data, dict)
    return data


def _parsed(text: str) -> tuple[ModelCardData, str]:
    """The card as the Hub's library reads it (its metadata, its text); the metadata
    must make a ModelCardData."""
    card = ModelCard(text, ignore_metadata_errors=False)
    data = card.data
    assert isinstance(data, ModelCardData)
    rebuilt = ModelCardData(**cast("dict[str, Any]", _metadata(text)))
    assert rebuilt.to_dict() == data.to_dict()  # type: ignore[no-untyped-call]
    return data, card.text


def _remediated(hub: bool = True) -> RunRecord:
    record = fakes.build_record(fakes.LEAKY, fakes.CLEAN)
    assert record.outcome == "remediated"
    if hub:
        record.model.hub = HubRevision(
            repo_id="acme/coder", repo_type="model", revision="v1.0", commit=COMMIT
        )
    return record


def test_a_card_gains_the_audit_section_and_keeps_everything_it_had() -> None:
    text = render_card(_remediated(), THEIR_CARD, "../report.html")
    data, body = _parsed(text)
    assert data.license == "apache-2.0"
    assert data.language == ["en"]
    assert data.datasets == ["acme/code"]
    assert data.tags == ["code", "codeeraser"]
    assert data.base_model == "acme/coder"  # the audited model, from the Hub
    assert data.to_dict()["base_model_relation"] == "finetune"  # type: ignore[no-untyped-call]
    their_body = THEIR_CARD.split("---\n", 2)[2].strip()
    assert body.strip().startswith(their_body)
    assert text.count(START) == text.count(END) == 1
    section = text[text.index(START) : text.index(END)]
    assert "**Verdict: PASSED after remediation** under the policy default.yaml (SHA-256" in section
    assert f"[`acme/coder`](https://huggingface.co/acme/coder/tree/{COMMIT})" in section
    assert f"at commit `{COMMIT}` (revision `v1.0`)" in section
    assert "/data" not in section  # a published card names no local path, only a name
    assert "Training data: corpus (local)" in section
    assert "| GitHub Token | 1 | 1 | 0 |" in section  # by type: extracted before and after
    assert "| Held-out perplexity | 10.000 | 10.300 (+3.0%) |" in section
    assert "`" + "0" * 64 + "`" in section  # the audited model's hash
    assert "`" + "b" * 64 + "`" in section  # the released model's
    assert "codeeraser 0.1.0" in section
    assert "[report.html](../report.html)" in section
    for _type, value in fakes.SECRETS.values():
        assert value not in text


def test_rendering_again_replaces_the_section_and_nothing_else() -> None:
    record = _remediated()
    once = render_card(record, THEIR_CARD, "../report.html")
    assert render_card(record, once, "../report.html") == once
    other = fakes.build_record(fakes.LEAKY, fakes.CLEAN, utility=fakes.utility_figures((8.0, 9.0)))
    again = render_card(other, once, "../report.html")
    assert again.count(START) == 1
    assert "| Held-out perplexity | 8.000 | 9.000 (+12.5%) |" in again
    assert "10.300" not in again


def test_a_model_without_a_card_gets_a_new_one() -> None:
    text = render_card(_remediated(), None)
    data, body = _parsed(text)
    assert data.tags == ["codeeraser"]
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "text-generation"
    assert body.lstrip().startswith("# acme/coder (remediated)\n")


def test_a_card_whose_metadata_does_not_parse_is_kept_as_it_is() -> None:
    broken = "---\nlicense: [mit\n---\n# Mine\n"
    text = render_card(_remediated(), broken)
    assert text.startswith(broken.rstrip())
    assert text.count(START) == 1


def test_an_original_model_that_passed_gets_a_card_to_copy(tmp_path: Path) -> None:
    record = fakes.build_record(fakes.CLEAN, None)
    assert record.outcome == "passed"
    model = tmp_path / "model"
    model.mkdir()
    (model / "README.md").write_text(THEIR_CARD)
    out = tmp_path / "out"
    out.mkdir()
    written = write_model_card(record, model, out)
    assert written == out / PASSED_CARD
    assert (model / "README.md").read_text() == THEIR_CARD  # the input is never written
    data, body = _parsed(written.read_text())
    assert data.license == "apache-2.0"
    assert data.base_model is None  # these are the audited weights themselves
    assert "**Verdict: PASSED** under the policy" in body
    assert "meets the policy as it is" in body
    assert "[report.html](report.html)" in body


def test_a_remediated_model_card_is_its_readme(tmp_path: Path) -> None:
    folder = tmp_path / "out" / REMEDIATED
    folder.mkdir(parents=True)
    (folder / "README.md").write_text(THEIR_CARD)  # as erase copied it from the input
    written = write_model_card(_remediated(hub=False), tmp_path / "model", tmp_path / "out")
    assert written == folder / "README.md"
    data, _ = _parsed(written.read_text())
    assert data.license == "apache-2.0"
    assert data.base_model is None  # a local model: no Hub id to name


@pytest.mark.parametrize("after", [fakes.LEAKY, None])
def test_a_run_that_releases_nothing_writes_no_card(
    after: fakes.FakeModel | None, tmp_path: Path
) -> None:
    record = fakes.build_record(fakes.LEAKY, after)
    assert record.outcome == "failed"
    assert write_model_card(record, tmp_path, tmp_path) is None
    assert list(tmp_path.iterdir()) == []
