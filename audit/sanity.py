"""The sanity probe: is this the trained model, with its own tokenizer?

Keys can all be there and still be the wrong ones: a freshly initialised model saved
as is, or a tokenizer of another model whose vocabulary size happens to match.
`sanity_probe` takes the model's mean next-token loss on a few of the training samples
it is audited against (the secrets' own tokens left out) and `check_sanity` requires it
to be well under a uniform predictor's ln V, else a `ModelLoadError` (exit 3) says why.
Measured on the tiny demo model (V = 512, ln V = 6.24): 0.05 with its own weights and
tokenizer, 6.24 with random weights, 8.3 and 10.0 with two other BPE tokenizers of the
same size, 13.4 with its token ids permuted. SmolLM2-135M's held-out perplexity of 8.35,
measured on this kind of machine, is 2.1 nats against ln 49,152 = 10.8 (20%). The
first check, on loading, is in `audit.integrity`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from audit.corpus import iter_samples
from audit.errors import InputError, ModelLoadError
from audit.model import forward, model_device
from audit.scan import scan_samples

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from audit.corpus import CorpusSpec
    from audit.findings import Finding
    from audit.model import LoadedModel

MAX_LOSS_RATIO = 0.75  # the probe's loss must stay under this share of ln V
PROBE_SAMPLES = 8  # training samples the probe reads at most
PROBE_TOKENS = 256  # tokens per sample at most (and the model's context)
MIN_PROBE_TOKENS = 16  # fewer scored tokens than this: no verdict possible


@dataclass(frozen=True)
class SanityProbe:
    """The model's mean next-token loss on training code, against a uniform guess."""

    loss: float  # mean cross-entropy, nats per token (secret tokens left out)
    uniform: float  # ln V: the loss of a model that guesses uniformly
    vocabulary: int  # V: the model's output vocabulary
    samples: int  # training samples read
    tokens: int  # tokens scored
    max_ratio: float = MAX_LOSS_RATIO

    @property
    def ratio(self) -> float:
        return self.loss / self.uniform if self.uniform > 0 else math.inf

    @property
    def passed(self) -> bool:
        return math.isfinite(self.loss) and self.ratio < self.max_ratio

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "passed": self.passed}


def check_sanity(probe: SanityProbe, path: Path, role: str = "model") -> SanityProbe:
    """`probe`, or a ModelLoadError (exit 3) when the model fails it."""
    if probe.passed:
        return probe
    loss = f"{probe.loss:.2f}" if math.isfinite(probe.loss) else "not a number"
    raise ModelLoadError(
        f"{path}: the {role} fails the sanity probe: its mean loss on "
        f"{probe.samples} training samples is {loss} nats/token, not well under a uniform "
        f"guess's {probe.uniform:.2f} (ln {probe.vocabulary}; it must be under "
        f"{probe.max_ratio:.0%} of it). Its weights are not the trained model's (random or "
        "damaged), or its tokenizer belongs to another model: save the model with its own "
        "tokenizer"
    )


def checked_probe(
    loaded: LoadedModel,
    texts: Mapping[str, str],
    findings: Iterable[Finding],
    role: str = "model",
) -> SanityProbe:
    """Probe a loaded model on the findings' samples (secrets left out); refuse it when
    it fails (ModelLoadError)."""
    probe = sanity_probe(
        loaded.model,
        loaded.tokenizer,
        probe_texts(texts, findings),
        context_length=loaded.context_length,
    )
    return check_sanity(probe, loaded.path, role)


def corpus_probe(loaded: LoadedModel, spec: CorpusSpec, role: str = "model") -> SanityProbe:
    """Probe a loaded model on the first samples of a corpus (the secrets a scan finds in
    them left out); refuse it when it fails (ModelLoadError)."""

    samples = list(islice(iter_samples(spec), PROBE_SAMPLES))
    results = scan_samples(samples)
    rows = [
        (sample.text, sorted((f.start, f.end) for f in result.findings))
        for sample, result in zip(samples, results, strict=True)
    ]
    probe = sanity_probe(loaded.model, loaded.tokenizer, rows, context_length=loaded.context_length)
    return check_sanity(probe, loaded.path, role)


def probe_texts(
    texts: Mapping[str, str], findings: Iterable[Finding], limit: int = PROBE_SAMPLES
) -> list[tuple[str, list[tuple[int, int]]]]:
    """Up to `limit` sample texts (in id order), each with its secrets' spans to leave out."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for finding in findings:
        spans.setdefault(finding.sample_id, []).append((finding.start, finding.end))
    chosen = sorted(texts)[:limit]
    return [(texts[i], sorted(spans.get(i, []))) for i in chosen]


def sanity_probe(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    samples: Sequence[tuple[str, Sequence[tuple[int, int]]]],
    *,
    context_length: int,
) -> SanityProbe:
    """Mean next-token loss over `samples` (text, spans to leave out), one sample a row."""

    limit = min(PROBE_TOKENS, context_length)
    rows = [_row(tokenizer, text, spans, limit) for text, spans in samples]
    rows = [(ids, keep) for ids, keep in rows if sum(keep[1:]) > 0]
    scored = sum(sum(keep[1:]) for _, keep in rows)
    if scored < MIN_PROBE_TOKENS:
        raise InputError(
            f"the training samples hold {scored} tokens of code besides the secrets: too "
            "little to check the model against (give data with code around the secrets)"
        )
    device = model_device(model)
    total, vocabulary = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for ids, keep in rows:
                loss, vocabulary = _row_loss(model, ids, keep, device)
                total += loss
    finally:
        model.train(was_training)
    return SanityProbe(
        loss=total / scored,
        uniform=math.log(vocabulary),
        vocabulary=vocabulary,
        samples=len(rows),
        tokens=scored,
    )


def _row(
    tokenizer: PreTrainedTokenizerBase, text: str, spans: Sequence[tuple[int, int]], limit: int
) -> tuple[list[int], list[bool]]:
    """Token ids of the start of `text`, and for each whether its loss counts (not a
    secret's token)."""
    encoded = tokenizer(text[: limit * 16], add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])[:limit]
    offsets = list(encoded["offset_mapping"])[:limit]
    keep = [not any(s < end and start < e for s, e in spans) for start, end in offsets]
    return ids, keep


def _row_loss(
    model: torch.nn.Module, ids: list[int], keep: list[bool], device: torch.device
) -> tuple[float, int]:
    """Summed next-token loss of one row at its kept positions, and the vocabulary size."""

    input_ids = torch.tensor([ids], device=device)  # (1, T)
    mask = torch.ones_like(input_ids)
    positions = torch.arange(len(ids), device=device).unsqueeze(0)
    logits = forward(model, input_ids, mask, positions)[0, :-1].float()  # (T-1, V)
    labels = input_ids[0, 1:]  # (T-1,)
    counted = torch.tensor(keep[1:], device=device)  # (T-1,)
    losses = F.cross_entropy(logits, labels, reduction="none")  # (T-1,)
    return float(losses[counted].sum()), int(logits.shape[-1])
