"""The model card of the released model: the Hub's format, with the audit in a section.

A gate run that ends with a model to release writes its card (a README.md in the Hub's
model-card format: YAML metadata, then Markdown sections), rendered from the record:

- a remediated model: ``OUT/remediated-model/README.md``. The erase stage copied the
  input's README.md there; it is kept and gains the audit section.
- an original model that passed as it is: ``OUT/model-card.md``, the input's card with
  the section (or a new card), to copy into the release. The input model folder is
  never written to.

The section (`templates/model_card.md.j2`) holds the verdict, the policy, the findings
by type before and after, utility before and after, the hashes and the tool version,
and links to the full report. It sits between two HTML comments; a card that already
has one (a model gated before) gets it replaced by this run's, and everything else in
the card is kept as it was. Metadata gains the ``codeeraser`` tag; a remediated model
of a Hub model gets it as ``base_model`` (relation ``finetune``: its weights were
trained further). A card whose metadata block is not valid YAML keeps its text as it
is, and the section is added below it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from audit.io import atomic_write_text
from gate.record import RunRecord
from gate.report import render_markdown
from gate.run_folder import REMEDIATED

CARD_NAME = "README.md"  # the card in a model folder
PASSED_CARD = "model-card.md"  # the card of an original model that passed, in the run folder
TAG = "codeeraser"
START = "<!-- codeeraser-audit:start -->"
END = "<!-- codeeraser-audit:end -->"
_SECTION = re.compile(rf"\n*{re.escape(START)}.*?{re.escape(END)}\n?", re.DOTALL)
_METADATA = re.compile(r"\A---\s*\n(.*?\n)?---\s*\n", re.DOTALL)


def write_model_card(record: RunRecord, model_dir: Path, out_dir: Path) -> Path | None:
    """Write the card of the model the run releases (None: it releases none)."""
    if record.outcome == "remediated":
        target = out_dir / REMEDIATED / CARD_NAME
        existing, report = _read(target), "../report.html"
    elif record.outcome == "passed":
        target = out_dir / PASSED_CARD
        existing, report = _read(model_dir / CARD_NAME), "report.html"
    else:
        return None
    atomic_write_text(target, render_card(record, existing, report))
    return target


def _read(path: Path) -> str | None:
    """A model folder's card, if it has one (a GGUF file's "folder" has none of its own)."""
    if path.parent.suffix.lower() == ".gguf" or not path.is_file():
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None  # a card that cannot be read is not carried over: the section stands alone


def render_card(record: RunRecord, existing: str | None, report: str = "report.html") -> str:
    """The card: `existing` (or a new one) with its metadata completed and the audit
    section (replacing an earlier one)."""
    section = audit_section(record, report)
    text = _SECTION.sub("\n", existing or "").rstrip()
    data = _metadata(text)
    if data is None:  # metadata that does not parse: kept as it is
        return f"{text}\n\n{section}"
    body = _METADATA.sub("", text, count=1).strip()
    _complete(data, record)
    heading = "" if body else f"# {_model_name(record)}\n\n"
    parts = [f"---\n{data.to_yaml()}\n---\n", heading, f"{body}\n\n" if body else "", section]
    return "".join(parts)


def audit_section(record: RunRecord, report: str) -> str:
    """The audit section, between its markers."""
    body = render_markdown(record, report, template="model_card.md.j2").strip()
    return f"{START}\n{body}\n{END}\n"


def _metadata(text: str) -> ModelCardData | None:
    """The card's metadata (empty for a card without any); None when it does not parse."""
    if not _METADATA.match(text):
        return ModelCardData()
    quiet = logging.getLogger("huggingface_hub.repocard")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        data = ModelCard(text).data
    except Exception:  # yaml's errors, or metadata that is not a mapping
        return None
    finally:
        quiet.setLevel(level)
    return data if isinstance(data, ModelCardData) else None


def _complete(data: ModelCardData, record: RunRecord) -> None:
    """Add what the card of an audited model says: the tag, and what it derives from."""
    tags = list(data.tags or [])
    data.tags = [*tags, TAG] if TAG not in tags else tags
    data.library_name = data.library_name or "transformers"
    data.pipeline_tag = data.pipeline_tag or "text-generation"
    hub = record.model.hub
    if record.outcome == "remediated" and hub is not None:
        data.base_model = hub.repo_id
        setattr(data, "base_model_relation", "finetune")  # noqa: B010  # a field it lacks


def _model_name(record: RunRecord) -> str:
    hub = record.model.hub
    name = hub.repo_id if hub is not None else Path(record.model.path).name
    return f"{name} (remediated)" if record.outcome == "remediated" else name
