"""What unlearning trains on: forget windows around secrets, and clean retain windows.

Forget set (design §5): for every sample that holds secrets to forget, windows of at
most ``window_tokens`` tokens that contain them. A sample is tokenized once, as one
piece, with character offsets; a secret's tokens are the tokens that overlap its
character span: the boundaries the model saw in training (as in `audit.probes`). A
window ends a few tokens after its secret, so that most of it is the code before the
secret, the prefix an attacker prompts with. Secrets that sit close together share a
window; a secret longer than a window is split over several.

Masks are over *label* positions: label j is token j + 1 of the window (the token
that the logits at position j predict), so a mask has T − 1 entries for T tokens.

Retain set: windows of ``retain_tokens`` tokens of clean code, code with no findings,
on which the model should keep behaving as before.

Token ids of a forget window spell its secret: they are left out of ``repr`` and are
never written anywhere.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from audit.errors import InputError
from audit.findings import Finding, checked_text
from gate.unlearn.settings import (
    DEFAULT_RETAIN_TOKENS,
    DEFAULT_RETAIN_WINDOWS,
    DEFAULT_WINDOW_TOKENS,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class SecretSpan:
    """Where one finding's secret tokens sit in a window: tokens [start, end)."""

    finding_id: str
    start: int
    end: int


@dataclass(frozen=True)
class ForgetWindow:
    """Up to ``window_tokens`` tokens of one sample and the secrets inside them."""

    sample_id: str
    input_ids: tuple[int, ...] = field(repr=False)
    secrets: tuple[SecretSpan, ...]

    @property
    def finding_ids(self) -> frozenset[str]:
        return frozenset(span.finding_id for span in self.secrets)

    def secret_labels(self, finding_ids: Iterable[str] | None = None) -> list[bool]:
        """Label-aligned mask (T − 1) of the secret tokens of `finding_ids` (all if None)."""
        wanted = None if finding_ids is None else set(finding_ids)
        mask = [False] * (len(self.input_ids) - 1)
        for span in self.secrets:
            if wanted is None or span.finding_id in wanted:
                for token in range(max(span.start, 1), span.end):
                    mask[token - 1] = True
        return mask


@dataclass(frozen=True)
class RetainWindow:
    """Up to ``retain_tokens`` tokens of clean code."""

    sample_id: str
    input_ids: tuple[int, ...] = field(repr=False)


def clamp_tokens(requested: int, context_length: int, what: str) -> int:
    """A window length that fits the model's context (at least 2 tokens)."""
    if requested < 2:
        raise InputError(f"{what} must be at least 2 (got {requested})")
    return min(requested, context_length)


def tokenize_with_offsets(
    text: str, tokenizer: PreTrainedTokenizerBase
) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character offsets of a whole sample, without special tokens."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(encoded["input_ids"]), [(int(a), int(b)) for a, b in encoded["offset_mapping"]]


def secret_token_span(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """Tokens [first, last + 1) that overlap the characters [start, end)."""
    hits = [j for j, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
    if not hits:
        raise InputError(f"the tokenizer gives no token for a secret at characters {start}-{end}")
    return hits[0], hits[-1] + 1


def build_forget_windows(
    findings: Sequence[Finding],
    texts: Mapping[str, str],
    tokenizer: PreTrainedTokenizerBase,
    window_tokens: int = DEFAULT_WINDOW_TOKENS,
) -> list[ForgetWindow]:
    """Windows that together hold every secret token of every finding, sample by sample."""
    by_sample: dict[str, list[Finding]] = defaultdict(list)
    for finding in findings:
        by_sample[finding.sample_id].append(finding)
    windows: list[ForgetWindow] = []
    for sample_id, group in by_sample.items():
        text = checked_text(group, texts)
        ids, offsets = tokenize_with_offsets(text, tokenizer)
        spans = [
            SecretSpan(f.id, *secret_token_span(offsets, f.start, f.end))
            for f in sorted(group, key=lambda f: (f.start, f.end, f.id))
        ]
        windows.extend(_cover(sample_id, ids, spans, window_tokens))
    return merge_duplicates(windows)


def merge_duplicates(windows: Sequence[ForgetWindow]) -> list[ForgetWindow]:
    """One window for windows with the same tokens and secret positions (copies of a file).

    Training data is full of copies (forks, vendored files); their windows are the same
    tensor, so they are trained on once, with every copy's finding ids on the spans.
    """
    merged: dict[tuple[object, ...], ForgetWindow] = {}
    for window in windows:
        key = (window.input_ids, tuple(sorted({(s.start, s.end) for s in window.secrets})))
        kept = merged.get(key)
        if kept is None:
            merged[key] = window
        else:
            spans = tuple(sorted(set(kept.secrets) | set(window.secrets), key=_span_order))
            merged[key] = ForgetWindow(kept.sample_id, kept.input_ids, spans)
    return list(merged.values())


def _span_order(span: SecretSpan) -> tuple[int, int, str]:
    return (span.start, span.end, span.finding_id)


def _cover(
    sample_id: str, ids: list[int], spans: list[SecretSpan], size: int
) -> Iterator[ForgetWindow]:
    """Place windows until every secret token is inside one (greedy, left to right)."""
    tail = max(1, size // 8)  # tokens kept after a secret
    todo = list(spans)
    while todo:
        first = todo[0]
        if first.end - first.start + tail <= size:
            last = first.end  # take in the following secrets while they fit whole
            for span in todo[1:]:
                if span.end + tail - first.start > size:
                    break
                last = max(last, span.end)
            end = min(len(ids), last + tail)
            start = max(0, end - size)
        else:  # longer than a window: a quarter of prefix, then as much secret as fits
            start = max(0, first.start - size // 4)
        end = min(len(ids), start + size)
        inside = [
            SecretSpan(s.finding_id, max(s.start, start) - start, min(s.end, end) - start)
            for s in todo
            if s.start < end
        ]
        todo = [SecretSpan(s.finding_id, max(s.start, end), s.end) for s in todo if s.end > end]
        yield ForgetWindow(sample_id, tuple(ids[start:end]), tuple(inside))


def build_retain_windows(
    texts: Iterable[tuple[str, str]],
    tokenizer: PreTrainedTokenizerBase,
    retain_tokens: int = DEFAULT_RETAIN_TOKENS,
    count: int = DEFAULT_RETAIN_WINDOWS,
    seed: int = 0,
) -> list[RetainWindow]:
    """Up to `count` windows, one per sample, from (sample id, text) pairs.

    The samples are a uniform random choice over the stream (reservoir sampling, so the
    corpus is read once and never held in memory); each window starts at a random
    token of its sample. Samples shorter than 2 tokens are skipped.
    """
    rng = random.Random(seed)  # noqa: S311 - sampling code, not a secret
    chosen: list[tuple[str, str]] = []
    for seen, (sample_id, text) in enumerate(texts):
        if len(chosen) < count:
            chosen.append((sample_id, text))
        else:
            slot = rng.randrange(seen + 1)
            if slot < count:
                chosen[slot] = (sample_id, text)
    windows = []
    for sample_id, text in sorted(chosen):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) < 2:
            continue
        start = rng.randrange(max(1, len(ids) - retain_tokens + 1))
        windows.append(RetainWindow(sample_id, tuple(ids[start : start + retain_tokens])))
    return windows


@dataclass(frozen=True)
class TokenBatch:
    """Right-padded windows as tensors; masks are label-aligned (B, T − 1)."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    valid: torch.Tensor  # (B, T − 1): label j is a real token
    secret: torch.Tensor  # (B, T − 1): label j is a secret token of any finding
    active: torch.Tensor  # (B, T − 1): label j is a secret token still to forget

    @property
    def labels(self) -> torch.Tensor:
        return self.input_ids[:, 1:]

    @property
    def context(self) -> torch.Tensor:
        """Real tokens that are no secret's (C in the design): descent happens here."""
        return self.valid & ~self.secret

    def to(self, device: torch.device) -> TokenBatch:
        return TokenBatch(*(t.to(device) for t in self._tensors()))

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.input_ids, self.attention_mask, self.valid, self.secret, self.active)


def collate(
    windows: Sequence[ForgetWindow | RetainWindow],
    pad_id: int,
    active: Iterable[str] | None = None,
) -> TokenBatch:
    """Stack windows, right-padded with `pad_id`; `active` picks the secrets to forget."""

    length = max(len(w.input_ids) for w in windows)
    rows = len(windows)
    input_ids = torch.full((rows, length), pad_id, dtype=torch.long)
    attention = torch.zeros((rows, length), dtype=torch.long)
    secret = torch.zeros((rows, length - 1), dtype=torch.bool)
    wanted = None if active is None else set(active)
    live = torch.zeros((rows, length - 1), dtype=torch.bool)
    for row, window in enumerate(windows):
        n = len(window.input_ids)
        input_ids[row, :n] = torch.tensor(window.input_ids, dtype=torch.long)
        attention[row, :n] = 1
        if isinstance(window, ForgetWindow):
            secret[row, : n - 1] = torch.tensor(window.secret_labels(), dtype=torch.bool)
            live[row, : n - 1] = torch.tensor(window.secret_labels(wanted), dtype=torch.bool)
    valid = attention[:, 1:].bool()
    return TokenBatch(input_ids, attention, valid, secret, live)
