"""Scan a corpus for secrets: streaming, parallel, in a deterministic order.

For each sample: a prefilter finds the lines where some detector could match (its
keywords or trigger regexes occur there); only those detectors run on those lines.
Each match becomes a candidate span, goes through the value filters, gets its
syntactic context (tree-sitter, parsed only for samples with candidates), goes
through the context filters, and overlapping candidates are resolved in favour of the
most specific detector. What is left becomes Findings, in text order.

`scan_corpus` streams samples to worker processes in chunks, keeps a bounded number
of chunks in flight (memory does not grow with the corpus) and yields findings in
input order, so the output does not depend on the number of processes.
"""

from __future__ import annotations

import bisect
import logging
import multiprocessing
import os
import re
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache, partial
from itertools import chain
from typing import TYPE_CHECKING

from ahocorasick_rs import AhoCorasick, Implementation

from audit.allowlist import is_allowlisted
from audit.context import SourceContext
from audit.corpus import CorpusSpec, ReadStats, Sample, iter_samples, language_for
from audit.detectors import (
    CODE_LANGUAGES,
    KEYWORD_TYPE,
    PRIORITY_GENERIC,
    Detector,
    EncodedSecretDetector,
    KubernetesSecretDetector,
    build_detectors,
)
from audit.errors import CodeEraserError
from audit.filters import CONTEXT_CHECKS, Candidate, false_positive
from audit.findings import Context, Finding, make_finding_id
from audit.placeholders import PLACEHOLDER, replace_spans

if TYPE_CHECKING:
    from concurrent.futures import Future

log = logging.getLogger(__name__)

MAX_LISTED = 100  # allowlisted findings kept with their location for the record
MAX_LINE = 4096  # longer lines (minified code, data) are scanned in windows around hits
WINDOW = 2048  # characters on each side of a hit in a long line
_IN_CODE_ROLES = frozenset({"string", "docstring", "comment"})


@dataclass(frozen=True)
class ScanOptions:
    """How to scan: which detectors, and how samples are batched for worker processes."""

    detectors: tuple[str, ...] | None = None  # None: every registered detector
    chunk_samples: int = 64  # samples per task sent to a worker process
    chunk_chars: int = 1 << 20  # ...or fewer, once the task holds this much text
    # Worker processes take about a second to start (a fresh interpreter that imports
    # tree-sitter and compiles the detectors); one process scans 8-13 MB/s, so a corpus
    # smaller than this is scanned here: on 8 MB of the standard library (2 busy cores)
    # two workers took 2.1 s where one process took 1.3 s.
    parallel_min_chars: int = 16_000_000


@dataclass(frozen=True)
class SampleResult:
    """The findings of one sample, those allowlisted inline, and filter counts."""

    findings: tuple[Finding, ...]
    filtered: tuple[tuple[str, int], ...] = ()
    allowlisted: tuple[Finding, ...] = ()  # on a `pragma: allowlist secret` line


@dataclass
class ScanSummary:
    """Counts for the summary table: by type, by skip reason, by filter."""

    samples: int = 0
    chars: int = 0
    samples_with_findings: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    filtered: Counter[str] = field(default_factory=Counter)
    allowlisted: Counter[str] = field(default_factory=Counter)  # by secret type
    allowlisted_first: list[Finding] = field(default_factory=list)  # up to MAX_LISTED
    baseline_accepted: int = 0
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # (origin, reason)

    def add(self, result: SampleResult) -> None:
        self.by_type.update(f.secret_type for f in result.findings)
        self.samples_with_findings += bool(result.findings)
        self.filtered.update(dict(result.filtered))
        self.allowlisted.update(f.secret_type for f in result.allowlisted)
        room = MAX_LISTED - len(self.allowlisted_first)
        self.allowlisted_first.extend(result.allowlisted[: max(room, 0)])

    @property
    def findings(self) -> int:
        return sum(self.by_type.values())


@dataclass(frozen=True)
class _Raw:
    start: int
    end: int
    detector: Detector
    secret_type: str


# Characters of a token run: what base64, hex, URL-safe and percent-encoded blobs use.
_RUN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-.~%")
_RUN_TABLE = bytes(ord("a") if chr(c) in _RUN_CHARS else ord(" ") for c in range(256))
_DIGIT_TABLE = bytes(
    ord("0") if chr(c).isdigit() else ord(".") if c == ord(".") else ord(" ") for c in range(256)
)
_HEX_TABLE = bytes(
    ord("0") if chr(c) in "0123456789abcdefABCDEF" else ord(":") if c == ord(":") else ord(" ")
    for c in range(256)
)
_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_DEPTH = 3  # decode layers of encoded blobs


class Scanner:
    """Finds the secrets in one text with a fixed set of detectors."""

    def __init__(self, detectors: Sequence[Detector]) -> None:
        self.detectors = tuple(detectors)
        keyed = [d for d in self.detectors if d.keywords]
        needles = sorted({k for d in keyed for k in d.keywords})
        self.needles = needles
        index = {k: i for i, k in enumerate(needles)}
        self.by_needle: list[list[Detector]] = [[] for _ in needles]
        for detector in keyed:
            for keyword in detector.keywords:
                self.by_needle[index[keyword]].append(detector)
        self.automaton = (
            AhoCorasick(needles, implementation=Implementation.DFA) if needles else None
        )
        self.run_detectors = tuple(d for d in self.detectors if d.mode == "run")
        self.min_run = min((d.min_run for d in self.run_detectors), default=0)
        self.ip = next((d for d in self.detectors if d.mode == "ip"), None)

    @cached_property
    def inner(self) -> Scanner | None:
        """The scanner for decoded blobs: these detectors less the generic ones."""
        if not any(isinstance(d, EncodedSecretDetector) for d in self.detectors):
            return None
        chosen = tuple(
            d
            for d in self.detectors
            if d.priority > PRIORITY_GENERIC and not isinstance(d, KubernetesSecretDetector)
        )
        return self if chosen == self.detectors else Scanner(chosen)

    def scan(self, sample: Sample) -> SampleResult:
        """Findings of one sample, in text order, with filter counts."""
        text = sample.text
        raw = self.raw(text, sample.language)
        if not raw:
            return SampleResult(())
        dropped: set[tuple[str, int, int]] = set()  # (reason, span): a span counts once
        context = SourceContext(text, sample.language, upto=max(r.end for r in raw))
        kept: list[tuple[_Raw, Context, tuple[int, int] | None]] = []
        for item in sorted(raw, key=lambda r: (r.start, r.end, r.detector.name)):
            verdict = _judge(item, text, sample, context)
            if isinstance(verdict, str):
                dropped.add((verdict, item.start, item.end))
            else:
                kept.append((item, *verdict))
        findings = _findings(sample, _resolve(kept))
        # a span dropped by one detector's filter but reported by another is not dropped
        reported = [(f.start, f.end) for f in findings]
        filtered = Counter(
            reason
            for reason, start, end in dropped
            if not any(s < end and start < e for s, e in reported)
        )
        allowed = [f for f in findings if _allowlisted(text, f.start, sample.origin)]
        findings = [f for f in findings if f not in allowed]
        return SampleResult(tuple(findings), tuple(sorted(filtered.items())), tuple(allowed))

    def raw(self, text: str, language: str | None, depth: int = 0) -> set[_Raw]:
        """Every candidate span of every detector, before filters."""
        low = lower_same_length(text)
        raw: set[_Raw] = set()
        lines: dict[int, set[Detector]] = defaultdict(set)
        whole: set[Detector] = set()
        for needle, pos, _ in self._hits(low):
            for detector in self.by_needle[needle]:
                if not detector.runs_on(language):
                    continue
                if detector.mode == "anchored":
                    span = detector.match_at(text, pos)
                    if span is not None:
                        raw.add(_Raw(*span, detector, detector.secret_type))
                elif detector.mode == "text":
                    whole.add(detector)
                else:
                    lines[low.rfind("\n", 0, pos) + 1].add(detector)
        for detector in whole:
            raw.update(
                _Raw(s, e, detector, detector.secret_type)
                for s, e in detector.spans(text, language)
            )
        for start, detectors in lines.items():
            raw.update(self._line_spans(text, start, detectors, language))
        raw.update(self._run_spans(text, depth))
        raw.update(self._ip_spans(text))
        return raw

    def _hits(self, low: str) -> list[tuple[int, int, int]]:
        if self.automaton is None:
            return []
        try:
            return self.automaton.find_matches_as_indexes(low, overlapping=True)
        except UnicodeEncodeError:  # a lone surrogate (from JSON): same length without it
            clean = _SURROGATE.sub("?", low)
            return self.automaton.find_matches_as_indexes(clean, overlapping=True)

    def _line_spans(
        self, text: str, start: int, detectors: set[Detector], language: str | None
    ) -> Iterator[_Raw]:
        end = _line_end(text, start)
        for offset, segment in _segments(text[start:end], detectors):
            for detector in detectors:
                for s, e in detector.spans(segment, language):
                    if e > s:
                        yield _Raw(
                            start + offset + s, start + offset + e, detector, detector.secret_type
                        )

    def _run_spans(self, text: str, depth: int) -> Iterator[_Raw]:
        if not self.run_detectors:
            return
        inner = partial(self._inner_type, depth=depth + 1)
        for start, end in token_runs(text, self.min_run):
            for detector in self.run_detectors:
                if end - start < detector.min_run:
                    continue
                for (s, e), secret_type in detector.run_spans(text, start, end, inner):
                    yield _Raw(s, e, detector, secret_type)

    def _inner_type(self, decoded: str, depth: int) -> str | None:
        """The type of the most specific secret in a decoded blob, or None."""
        if depth > MAX_DEPTH or self.inner is None:
            return None
        found = [r for r in self.inner.raw(decoded, None, depth) if not _dropped(r, decoded)]
        if not found:
            return None
        best = max(found, key=lambda r: (r.detector.priority, r.end - r.start))
        return best.secret_type

    def _ip_spans(self, text: str) -> Iterator[_Raw]:
        if self.ip is None:
            return
        for pos in ip_candidates(text):
            span = self.ip.match_at(text, pos)
            if span is not None:
                yield _Raw(*span, self.ip, self.ip.secret_type)


def _dropped(raw: _Raw, text: str) -> bool:
    """A value filter drops this candidate found inside a decoded blob."""
    line_start = text.rfind("\n", 0, raw.start) + 1
    candidate = Candidate(
        value=text[raw.start : raw.end],
        secret_type=raw.secret_type,
        line=text[line_start : _line_end(text, raw.start)],
        column=raw.start - line_start,
        filename="",
    )
    return false_positive(candidate) is not None


def token_runs(text: str, min_len: int) -> Iterator[tuple[int, int]]:
    """Spans of the runs of token characters at least `min_len` long (no regex: a
    byte table marks the characters, `bytes.find` jumps between long runs)."""
    marked = text.encode("ascii", "replace").translate(_RUN_TABLE)
    needle = b"a" * min_len
    pos = marked.find(needle)
    while pos >= 0:
        end = marked.find(b" ", pos + min_len)
        end = len(marked) if end < 0 else end
        yield pos, end
        pos = marked.find(needle, end)


def ip_candidates(text: str) -> Iterator[int]:
    """Where an IPv4 (`d.d.d.d`) or IPv6 (`h:h:h`) address may start."""
    encoded = text.encode("ascii", "replace")
    for table, needle, sep in ((_DIGIT_TABLE, b"0.0", b"0."), (_HEX_TABLE, b"0:0:", b"0:")):
        marked = encoded.translate(table)
        pos = marked.find(needle)
        while pos >= 0:
            start = pos
            while start > 0 and marked[start - 1] in sep:
                start -= 1
            yield start
            end = pos + len(needle)
            while end < len(marked) and marked[end] in sep:
                end += 1
            pos = marked.find(needle, end)


def _allowlisted(text: str, start: int, filename: str) -> bool:
    """detect-secrets' inline allowlist (`audit.allowlist`) for the line at `start`."""
    line_start = text.rfind("\n", 0, start) + 1
    line = text[line_start : _line_end(text, start)]
    previous = ""
    if line_start > 0:
        previous_start = text.rfind("\n", 0, line_start - 1) + 1
        previous = text[previous_start : _line_end(text, previous_start)]
    return is_allowlisted(filename, line, previous)


def lower_same_length(text: str) -> str:
    """`text.lower()`, keeping any character whose lower case is longer (e.g. 'İ') as is."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def _line_end(text: str, start: int) -> int:
    end = text.find("\n", start)
    end = len(text) if end < 0 else end
    return end - 1 if end > start and text[end - 1] == "\r" else end


def _segments(line: str, detectors: set[Detector]) -> list[tuple[int, str]]:
    """The whole line, or for a very long line the windows around its keywords."""
    if len(line) <= MAX_LINE:
        return [(0, line)]
    low = lower_same_length(line)
    columns = sorted({pos for d in detectors for k in d.keywords for pos in _find_all(low, k)})
    windows: list[list[int]] = []
    for column in columns:
        start, end = max(0, column - WINDOW), min(len(line), column + WINDOW)
        if windows and start <= windows[-1][1]:
            windows[-1][1] = max(windows[-1][1], end)
        else:
            windows.append([start, end])
    return [(start, line[start:end]) for start, end in windows]


def _find_all(haystack: str, needle: str) -> Iterator[int]:
    pos = haystack.find(needle)
    while pos >= 0:
        yield pos
        pos = haystack.find(needle, pos + 1)


def _judge(
    item: _Raw, text: str, sample: Sample, context: SourceContext
) -> str | tuple[Context, tuple[int, int] | None]:
    """A filter's reason to drop the candidate, or its context to keep it."""
    line_start = text.rfind("\n", 0, item.start) + 1
    previous_start = text.rfind("\n", 0, max(line_start - 1, 0)) + 1
    candidate = Candidate(
        value=text[item.start : item.end],
        secret_type=item.secret_type,
        line=text[line_start : _line_end(text, item.start)],
        column=item.start - line_start,
        filename=sample.origin,
        previous=text[previous_start : max(line_start - 1, previous_start)],
    )
    reason = false_positive(candidate)
    if reason:
        return reason
    role = context.at(item.start, item.end)
    if (
        candidate.secret_type == KEYWORD_TYPE
        and sample.language in CODE_LANGUAGES
        and role.context.kind not in _IN_CODE_ROLES
    ):
        return "not a string literal"
    named = replace(candidate, name=role.context.name)
    reason = false_positive(named, CONTEXT_CHECKS)
    return reason if reason else (role.context, role.name_span)


def _resolve(
    kept: list[tuple[_Raw, Context, tuple[int, int] | None]],
) -> list[tuple[_Raw, Context]]:
    """Of overlapping spans keep the most specific detector's, then the longest."""
    ranked = sorted(
        kept,
        key=lambda k: (
            -k[0].detector.priority,
            k[0].start - k[0].end,
            k[0].start,
            k[0].detector.name,
        ),
    )
    starts: list[int] = []
    ends: list[int] = []
    chosen: list[tuple[_Raw, Context, tuple[int, int] | None]] = []
    for entry in ranked:
        raw = entry[0]
        i = bisect.bisect_left(starts, raw.start)
        if (i > 0 and ends[i - 1] > raw.start) or (i < len(starts) and starts[i] < raw.end):
            continue
        starts.insert(i, raw.start)
        ends.insert(i, raw.end)
        chosen.append(entry)
    chosen.sort(key=lambda k: (k[0].start, k[0].end, k[0].detector.secret_type))
    return [(raw, _redact_name(ctx, span, starts, ends)) for raw, ctx, span in chosen]


def _redact_name(
    context: Context, span: tuple[int, int] | None, starts: list[int], ends: list[int]
) -> Context:
    """Drop a name that overlaps a finding: a dict key can itself be a secret."""
    if span is None:
        return context
    i = bisect.bisect_right(starts, span[0])
    overlaps = (i > 0 and ends[i - 1] > span[0]) or (i < len(starts) and starts[i] < span[1])
    return Context(kind=context.kind, name=None, node=context.node) if overlaps else context


def _findings(sample: Sample, chosen: list[tuple[_Raw, Context]]) -> list[Finding]:
    return [
        Finding.create(
            sample_id=sample.id,
            origin=sample.origin,
            text=sample.text,
            start=raw.start,
            end=raw.end,
            secret_type=raw.secret_type,
            detector=raw.detector.name,
            context=context,
        )
        for raw, context in chosen
    ]


# --------------------------------------------------------------------------------------
# Corpus level: chunks, worker processes, ordered results.
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def scanner_for(detectors: tuple[str, ...] | None) -> Scanner:
    """One Scanner per detector selection and process."""
    return Scanner(build_detectors(detectors))


def scan_samples(
    samples: Iterable[Sample], detectors: tuple[str, ...] | None = None
) -> list[SampleResult]:
    """Scan samples in this process."""
    scanner = scanner_for(detectors)
    return [_redacted(scanner.scan(sample)) for sample in samples]


def _redacted(result: SampleResult) -> SampleResult:
    """Secrets in a sample's id, origin or context names do not reach its findings."""
    if not result.findings:
        return result
    return replace(result, findings=tuple(redact_finding(f) for f in result.findings))


# --------------------------------------------------------------------------------------
# Secrets outside the text: in sample ids, origins and context names.
# --------------------------------------------------------------------------------------

_IDENTIFIER = "identifier"  # the file name the detectors see: no extension, no special case
# A file extension at the end of a path part, blanked (same length) for a second look,
# so that `alice@corp.com.json` is seen as the address it holds, not as a file name.
_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,7}(?=/|$)")
_SEPARATORS = re.compile(r"[\-.:=,;+]")
_PASSES = 3


@lru_cache(maxsize=1 << 16)
def redact_identifier(text: str) -> str:
    """`text` with every secret the detectors find in it replaced by its placeholder
    (`audit.placeholders`); idempotent. Inline allowlist pragmas do not apply here."""
    for _ in range(_PASSES):
        spans = _identifier_spans(text)
        if not spans:
            return text
        text = replace_spans(text, spans)
    return PLACEHOLDER.sub("«…»", text) if _identifier_spans(text) else text


def _identifier_spans(text: str) -> list[tuple[int, int]]:
    """Spans of secrets in `text` (and in `text` with file extensions blanked), less
    those inside placeholders already there."""
    if not text or text.isspace():
        return []
    kept = [m.span() for m in PLACEHOLDER.finditer(text)]
    scanner = scanner_for(None)
    found: list[tuple[int, int]] = []
    variants = (
        text,
        _EXTENSION.sub(lambda m: " " * len(m[0]), text),
        _SEPARATORS.sub(" ", text),  # `clone-ghp_…`, `AKIA….prod`: glued by a separator
        text.replace("_", " "),  # `key_AKIA…` (apart, as `ghp_` keeps its underscore above)
    )
    for variant in dict.fromkeys(variants):  # a second look adds only what the first missed
        result = scanner.scan(Sample(id="", origin=_IDENTIFIER, text=variant, language=None))
        spans = [(f.start, f.end) for f in (*result.findings, *result.allowlisted)]
        found += [(a, b) for a, b in spans if not _overlaps(a, b, found)]
    return [(a, b) for a, b in found if not _overlaps(a, b, kept)]


def _overlaps(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    return any(s < end and start < e for s, e in spans)


def redact_finding(finding: Finding) -> Finding:
    """`finding` with its sample id, origin and context name redacted (and its id, which
    is derived from the sample id, made from the redacted one)."""
    sample_id = redact_identifier(finding.sample_id)
    origin = redact_identifier(finding.origin)
    name = finding.context.name
    clean_name = redact_identifier(name) if name else name
    if (sample_id, origin, clean_name) == (finding.sample_id, finding.origin, name):
        return finding
    return replace(
        finding,
        id=make_finding_id(sample_id, finding.start, finding.end, finding.secret_type),
        sample_id=sample_id,
        origin=origin,
        context=replace(finding.context, name=clean_name),
    )


def _worker_scan(chunk: list[Sample], detectors: tuple[str, ...] | None) -> list[SampleResult]:
    return scan_samples(chunk, detectors)


def resolve_jobs(jobs: int | None) -> int:
    """`None` or 0: every core this process may use."""
    if jobs is None or jobs <= 0:
        affinity = getattr(os, "sched_getaffinity", None)
        return len(affinity(0)) if affinity else os.cpu_count() or 1
    return jobs


def scan_corpus(
    spec: CorpusSpec,
    options: ScanOptions | None = None,
    jobs: int | None = None,
    summary: ScanSummary | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[Finding]:
    """Stream the findings of a corpus in input order; fill `summary` as it goes.

    `progress(samples, chars)` is called after each chunk with what it added.
    """
    options = options or ScanOptions()
    summary = summary if summary is not None else ScanSummary()
    stats = ReadStats()
    build_detectors(options.detectors)  # an unknown detector name fails before any work
    chunks = _chunks(iter_samples(spec, stats), options)
    for chunk, results in _scan_chunks(chunks, options, resolve_jobs(jobs)):
        for result in results:
            summary.add(result)
            for found in result.allowlisted:
                log.info("%s:%d: %s allowlisted inline", found.origin, found.line, found.preview)
            yield from result.findings
        chars = sum(len(s.text) for s in chunk)
        summary.samples += len(chunk)
        summary.chars += chars
        if progress is not None:
            progress(len(chunk), chars)
    summary.skipped.update(stats.skipped)
    summary.skipped_files.extend((redact_identifier(o), r) for o, r in stats.skipped_files)


def _chunks(samples: Iterator[Sample], options: ScanOptions) -> Iterator[list[Sample]]:
    chunk: list[Sample] = []
    size = 0
    for sample in samples:
        chunk.append(sample)
        size += len(sample.text)
        if len(chunk) >= options.chunk_samples or size >= options.chunk_chars:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _scan_chunks(
    chunks: Iterator[list[Sample]], options: ScanOptions, jobs: int
) -> Iterator[tuple[list[Sample], list[SampleResult]]]:
    head: list[list[Sample]] = []
    size = 0
    if jobs > 1:  # read ahead, to learn whether the corpus is worth starting processes for
        for chunk in chunks:
            head.append(chunk)
            size += sum(len(s.text) for s in chunk)
            if size >= options.parallel_min_chars and len(head) >= 2:
                log.debug("Scanning in %d worker processes", jobs)
                yield from _scan_in_pool(chain(head, chunks), options, jobs)
                return
        log.debug("Scanning in this process: %d characters in all", size)
    for chunk in chain(head, chunks):
        yield chunk, scan_samples(chunk, options.detectors)


def _scan_in_pool(
    chunks: Iterator[list[Sample]], options: ScanOptions, jobs: int
) -> Iterator[tuple[list[Sample], list[SampleResult]]]:

    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if "forkserver" in methods:
        context.set_forkserver_preload(["audit.scan"])
    pending: deque[tuple[list[Sample], Future[list[SampleResult]]]] = deque()
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context)
    try:
        for chunk in chunks:
            pending.append((chunk, pool.submit(_worker_scan, chunk, options.detectors)))
            if len(pending) >= 2 * jobs:  # bounded: memory does not grow with the corpus
                yield _next_result(pending)
        while pending:
            yield _next_result(pending)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _next_result(
    pending: deque[tuple[list[Sample], Future[list[SampleResult]]]],
) -> tuple[list[Sample], list[SampleResult]]:

    chunk, future = pending.popleft()
    try:
        return chunk, future.result()
    except BrokenProcessPool:
        raise CodeEraserError(
            "a scan worker process died (out of memory?); run again with --jobs 1"
        ) from None


def scan_text(
    text: str, origin: str, language: str | None = None, detectors: tuple[str, ...] | None = None
) -> SampleResult:
    """Scan one document (e.g. one record of a data pipeline): its findings, those
    allowlisted inline, and filter counts. `language` defaults to the origin's."""

    chosen = language if language is not None else language_for(origin)
    sample = Sample(id=origin, origin=origin, text=text, language=chosen)
    return scanner_for(detectors).scan(sample)
