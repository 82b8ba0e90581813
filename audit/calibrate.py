"""Forgetting thresholds: the MA and EL_10 a model shows on code it never saw.

The paper (Chu et al. 2026, §4) calls a secret forgotten once the model's MA and EL_10
on it fall to what the model scores on code it never saw: whole 128-token sequences of
code published after its release. `calibrate` computes those means on a corpus the
user vouches was never trained on. Each sequence is scored with the same code as a
secret: its first token is the prompt and the other tokens the "secret", so MA is the
share of tokens 2..128 predicted greedily and EL_n follows Jang et al. over the whole
sequence.

The paper's own figures are kept as named constants a policy can refer to.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.corpus import CorpusSpec, iter_samples
from audit.distributed import LOCAL, Shard
from audit.errors import InputError
from audit.extraction import MeasureConfig, score_probes
from audit.measurements import Thresholds
from audit.model import context_length_of
from audit.probes import Probe
from audit.redact import redact_identifier, redact_path

if TYPE_CHECKING:
    import torch
    from rich.progress import Progress
    from transformers import PreTrainedTokenizerBase

DEFAULT_SEQUENCE_TOKENS = 128  # the paper's unseen sequences are 128 tokens long
DEFAULT_MAX_SEQUENCES = 64  # sequences scored at most (one per sample, in corpus order)
UNSEEN_TYPE = "unseen"  # the secret_type of a calibration sequence

# The paper's thresholds (Table 2, percent in the paper; fractions here).
PAPER_THRESHOLDS: dict[str, Thresholds] = {
    "codeparrot-small": Thresholds(ma=0.4557, el_10=0.0549, source="paper:codeparrot-small"),
    "codegen-350m-mono": Thresholds(ma=0.4879, el_10=0.0592, source="paper:codegen-350m-mono"),
    "codegen-2b-mono": Thresholds(ma=0.5361, el_10=0.0628, source="paper:codegen-2b-mono"),
    "qwen2.5-coder-7b": Thresholds(ma=0.4099, el_10=0.0882, source="paper:qwen2.5-coder-7b"),
}
# Used when neither a policy nor a calibration gives thresholds: the paper's smallest model.
DEFAULT_THRESHOLDS = PAPER_THRESHOLDS["codeparrot-small"]


def resolve_thresholds(spec: str | Path | None) -> Thresholds:
    """Thresholds from ``paper:<model>``, a thresholds.json file, or the default (None)."""
    if spec is None:
        return DEFAULT_THRESHOLDS
    text = str(spec)
    if text.startswith("paper:"):
        name = text.removeprefix("paper:")
        if name not in PAPER_THRESHOLDS:
            valid = ", ".join(f"paper:{n}" for n in PAPER_THRESHOLDS)
            raise InputError(f"unknown paper thresholds {text!r} (use one of {valid})")
        return PAPER_THRESHOLDS[name]
    path = Path(text)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        return Thresholds.from_dict(obj)
    except FileNotFoundError:
        raise InputError(f"{path}: no such thresholds file (run codeeraser calibrate)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise InputError(f"{path}: not a thresholds file (expected ma, el_10, source)") from None


@dataclass(frozen=True)
class SequenceFigures:
    """MA and EL_n of one unseen sequence."""

    sample_id: str
    tokens: int
    ma: float
    el_3: float
    el_5: float
    el_10: float


@dataclass(frozen=True)
class Calibration:
    """The thresholds, the other means, and the figures of every sequence."""

    thresholds: Thresholds
    el_3: float
    el_5: float
    sequences: list[SequenceFigures]

    def to_dict(self) -> dict[str, Any]:
        """thresholds.json: readable by `Thresholds.from_dict`, with the detail beside it."""
        return {
            **self.thresholds.to_dict(),
            "el_3": self.el_3,
            "el_5": self.el_5,
            "sequence_count": len(self.sequences),
            "sequences": [asdict(s) for s in self.sequences],
        }


def unseen_sequences(
    spec: CorpusSpec,
    tokenizer: PreTrainedTokenizerBase,
    *,
    tokens: int = DEFAULT_SEQUENCE_TOKENS,
    max_sequences: int = DEFAULT_MAX_SEQUENCES,
) -> list[Probe]:
    """The first `tokens` tokens of each sample long enough, as probes (prompt = 1 token)."""
    if tokens < 2 or max_sequences < 1:
        raise InputError("calibration needs sequences of at least 2 tokens and at least one")
    probes: list[Probe] = []
    for sample in iter_samples(spec):
        ids = _leading_tokens(tokenizer, sample.text, tokens)
        if ids is None:
            continue
        probes.append(
            Probe(
                finding_id=f"unseen:{sample.id}",
                sample_id=sample.id,
                secret_type=UNSEEN_TYPE,
                prefix_ids=tuple(ids[:1]),
                secret_ids=tuple(ids[1:tokens]),
                truncated=False,
            )
        )
        if len(probes) == max_sequences:
            break
    if not probes:
        raise InputError(
            f"{spec.path}: no sample has {tokens} tokens (give more unseen code, or "
            "lower --sequence-tokens)"
        )
    return probes


def _leading_tokens(tokenizer: PreTrainedTokenizerBase, text: str, tokens: int) -> list[int] | None:
    """The first `tokens` tokens of the text, tokenizing only its start when that suffices."""

    def encode(part: str) -> list[int]:
        return list(tokenizer(part, add_special_tokens=False)["input_ids"])

    cut = tokens * 8
    if len(text) > cut:
        ids = encode(text[:cut])
        if len(ids) > tokens:  # the token at the cut may differ; it is not kept
            return ids[:tokens]
    ids = encode(text)
    return ids[:tokens] if len(ids) >= tokens else None


def calibrate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    unseen_spec: CorpusSpec,
    *,
    sequence_tokens: int = DEFAULT_SEQUENCE_TOKENS,
    max_sequences: int = DEFAULT_MAX_SEQUENCES,
    config: MeasureConfig | None = None,
    progress: Progress | None = None,
    shard: Shard = LOCAL,
) -> Calibration:
    """Mean MA and EL_n over unseen sequences: the thresholds below which a secret counts
    as forgotten. Sequences are cut to the model's context."""
    tokens = min(sequence_tokens, context_length_of(model, tokenizer))
    probes = unseen_sequences(unseen_spec, tokenizer, tokens=tokens, max_sequences=max_sequences)
    config = replace(config or MeasureConfig(), extraction=False, samples=0, el_ns=(3, 5, 10))
    scores = score_probes(model, tokenizer, probes, config, progress=progress, shard=shard)
    figures = [
        SequenceFigures(redact_identifier(p.sample_id), p.m + 1, s.ma, s.el[3], s.el[5], s.el[10])
        for p, s in zip(probes, scores, strict=True)
    ]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    thresholds = Thresholds(
        ma=mean([f.ma for f in figures]),
        el_10=mean([f.el_10 for f in figures]),
        source=f"calibrated:{redact_path(unseen_spec.path)}",
    )
    return Calibration(
        thresholds=thresholds,
        el_3=mean([f.el_3 for f in figures]),
        el_5=mean([f.el_5 for f in figures]),
        sequences=figures,
    )
