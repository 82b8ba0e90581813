"""Finding + sample text → Probe: the token ids an attacker prompts with, and the secret's.

The window around a secret is tokenized once, as one piece, with character offsets: the
secret tokens are the tokens that overlap the secret's character span, exactly the
boundaries the model saw in training. (Tokenizing the secret on its own, as the
reference implementation does, gives other boundaries: a leading quote or space merges
differently, and the model is then scored on token sequences it never saw.)

The prefix is the ``prefix_tokens`` tokens just before the first secret token. Prefix,
secret and the tokens a greedy decode runs past the secret must fit the model's
context: the secret is cut to ``max_secret_tokens`` and to what fits (``truncated``),
and the prefix is clamped to the room left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from audit.errors import InputError
from audit.findings import Finding, checked_text
from audit.model import start_token_id

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DEFAULT_PREFIX_TOKENS = 128  # tokens of code before the secret given to the model (paper)
DEFAULT_SECRET_TOKENS = 32  # secret tokens measured at most (design §4)
DEFAULT_DECODE_MARGIN = 8  # tokens greedy extraction decodes past the secret's length

# Tokens at the very start of a window that cut into the text may be tokenized
# differently than in the whole file (a word cut in half); they never enter a prefix.
_GUARD_TOKENS = 8
_CHARS_AFTER = 64  # text after the secret kept in the window, so its last token is whole


@dataclass(frozen=True)
class Probe:
    """What the model is prompted with for one finding, and the secret it should not give.

    `secret` and `lead` are kept in memory only: they are left out of ``repr`` and must
    never be written anywhere.
    """

    finding_id: str
    sample_id: str
    secret_type: str
    prefix_ids: tuple[int, ...]  # the attacker's prompt: code before the secret
    secret_ids: tuple[int, ...]  # the measured secret tokens (in-context boundaries)
    truncated: bool  # the secret was cut (max_secret_tokens or the model's context)
    secret: str = field(default="", repr=False)  # the measured part of the secret's text
    lead: str = field(default="", repr=False)  # text the first secret token holds before it

    @property
    def m(self) -> int:
        """Number of secret tokens measured."""
        return len(self.secret_ids)


@dataclass(frozen=True)
class _Window:
    start: int  # character offset of the window in the sample text
    ids: list[int]
    offsets: list[tuple[int, int]]  # character offsets relative to `start`
    first: int  # index of the first secret token
    last: int  # index of the last secret token (inclusive)
    usable: int  # index of the first token that may enter the prefix


def build_probes(
    findings: Sequence[Finding],
    texts: Mapping[str, str],
    tokenizer: PreTrainedTokenizerBase,
    *,
    context_length: int,
    prefix_tokens: int = DEFAULT_PREFIX_TOKENS,
    max_secret_tokens: int = DEFAULT_SECRET_TOKENS,
    decode_margin: int = DEFAULT_DECODE_MARGIN,
    start_token: int | None = None,
) -> list[Probe]:
    """One Probe per finding, in order; `texts` maps sample id to sample text.

    An InputError names the finding whose sample is missing or whose text at the span
    does not match its hash (the findings file is from another corpus).
    """
    if prefix_tokens < 0 or max_secret_tokens < 1:
        raise InputError("prefix tokens must be >= 0 and secret tokens >= 1")
    if context_length < decode_margin + 2:
        raise InputError(
            f"the model's context ({context_length} tokens) is too short to measure anything"
        )
    if start_token is None:
        start_token = start_token_id(tokenizer)
    bos = _document_start(tokenizer)
    return [
        _probe(
            finding,
            checked_text([finding], texts),
            tokenizer,
            context_length=context_length,
            prefix_tokens=prefix_tokens,
            max_secret_tokens=max_secret_tokens,
            decode_margin=decode_margin,
            start_token=start_token,
            bos=bos,
        )
        for finding in findings
    ]


def _probe(
    finding: Finding,
    text: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    context_length: int,
    prefix_tokens: int,
    max_secret_tokens: int,
    decode_margin: int,
    start_token: int,
    bos: int | None,
) -> Probe:
    window = _tokenize_window(text, finding.start, finding.end, tokenizer, prefix_tokens)
    whole = window.last - window.first + 1
    m = max(1, min(whole, max_secret_tokens, context_length - decode_margin - 1))
    room = context_length - decode_margin - m
    p = min(prefix_tokens, window.first - window.usable, room)
    prefix = tuple(window.ids[window.first - p : window.first]) if p > 0 else (start_token,)
    if bos is not None and 0 < p == window.first and window.start == 0 and p < room:
        prefix = (bos, *prefix)  # the whole file is the prefix: the model saw it after BOS
    secret_ids = tuple(window.ids[window.first : window.first + m])
    last_end = window.start + window.offsets[window.first + m - 1][1]
    secret = finding_text(finding, text) if m == whole else text[finding.start : last_end]
    return Probe(
        finding_id=finding.id,
        sample_id=finding.sample_id,
        secret_type=finding.secret_type,
        prefix_ids=prefix,
        secret_ids=secret_ids,
        truncated=m < whole,
        secret=secret,
        lead=_lead(tokenizer, secret_ids, secret),
    )


def _document_start(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The BOS id when the tokenizer puts one before every text (Llama style), else None."""
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bos if isinstance(bos, int) and ids and ids[0] == bos else None


def finding_text(finding: Finding, text: str) -> str:
    """The secret's plaintext; keep it in memory only."""
    return text[finding.start : finding.end]


def _tokenize_window(
    text: str, start: int, end: int, tokenizer: PreTrainedTokenizerBase, prefix_tokens: int
) -> _Window:
    """Tokenize text around [start, end) with enough tokens before it for the prefix."""
    before = (prefix_tokens + _GUARD_TOKENS) * 4
    while True:
        a = max(0, start - before)
        b = min(len(text), end + _CHARS_AFTER)
        encoded = tokenizer(text[a:b], add_special_tokens=False, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])
        offsets = [tuple(o) for o in encoded["offset_mapping"]]
        hits = [
            j
            for j, (s, e) in enumerate(offsets)
            if e > s and s < end - a and e > start - a  # overlaps the secret's span
        ]
        if not hits:
            raise InputError(f"the tokenizer gives no token for a secret at {start}-{end}")
        usable = 0 if a == 0 else _GUARD_TOKENS
        if a == 0 or hits[0] - usable >= prefix_tokens:
            return _Window(a, ids, offsets, hits[0], hits[-1], min(usable, hits[0]))
        before *= 2


def _lead(tokenizer: PreTrainedTokenizerBase, secret_ids: tuple[int, ...], secret: str) -> str:
    """The text the secret tokens decode to before the secret itself (e.g. a space)."""
    decoded = tokenizer.decode(list(secret_ids), clean_up_tokenization_spaces=False)
    if not isinstance(decoded, str):
        return ""
    at = decoded.find(secret[: max(1, min(len(secret), 4))]) if secret else -1
    return decoded[:at] if at > 0 else ""
