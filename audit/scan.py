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
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from functools import lru_cache
from itertools import chain

from audit.context import SourceContext
from audit.corpus import CorpusSpec, ReadStats, Sample, iter_samples
from audit.detectors import (
    CODE_LANGUAGES,
    KEYWORD_TYPE,
    Detector,
    build_detectors,
    scoped_settings,
)
from audit.errors import CodeEraserError
from audit.filters import CONTEXT_CHECKS, Candidate, false_positive
from audit.findings import Context, Finding
from audit.redact import redact_finding

log = logging.getLogger(__name__)

MAX_LINE = 4096  # longer lines (minified code, data) are scanned in windows around hits
WINDOW = 2048  # characters on each side of a hit in a long line
_IN_CODE_ROLES = frozenset({"string", "docstring", "comment"})


@dataclass(frozen=True)
class ScanOptions:
    """How to scan: which detectors, and how samples are batched for worker processes."""

    detectors: tuple[str, ...] | None = None  # None: every registered detector
    chunk_samples: int = 64  # samples per task sent to a worker process
    chunk_chars: int = 1 << 20  # ...or fewer, once the task holds this much text
    # Worker processes take about half a second to start (a fresh interpreter that
    # imports detect-secrets and tree-sitter); a corpus smaller than this is scanned in
    # this process, where it takes a second or two anyway.
    parallel_min_chars: int = 4_000_000


@dataclass(frozen=True)
class SampleResult:
    """The findings of one sample, and how many candidates each filter dropped."""

    findings: tuple[Finding, ...]
    filtered: tuple[tuple[str, int], ...] = ()


@dataclass
class ScanSummary:
    """Counts for the summary table: by type, by skip reason, by filter."""

    samples: int = 0
    chars: int = 0
    samples_with_findings: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    filtered: Counter[str] = field(default_factory=Counter)
    baseline_accepted: int = 0
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # (origin, reason)

    def add(self, result: SampleResult) -> None:
        self.by_type.update(f.secret_type for f in result.findings)
        self.samples_with_findings += bool(result.findings)
        self.filtered.update(dict(result.filtered))

    @property
    def findings(self) -> int:
        return sum(self.by_type.values())


@dataclass(frozen=True)
class _Raw:
    start: int
    end: int
    detector: Detector


class Scanner:
    """Finds the secrets in one sample's text with a fixed set of detectors."""

    def __init__(self, detectors: Sequence[Detector]) -> None:
        self.detectors = tuple(detectors)
        self.text_detectors = tuple(d for d in self.detectors if d.multiline)
        line = [d for d in self.detectors if not d.multiline]
        by_keyword = _index(line, "keywords")
        by_trigger = _index(line, "triggers")
        self.keywords = tuple(by_keyword)
        self.triggers = tuple(re.compile(pattern) for pattern in by_trigger)
        self.groups = (*by_keyword.values(), *by_trigger.values())

    def scan(self, sample: Sample) -> SampleResult:
        """Findings of one sample, in text order, with filter counts."""
        text = sample.text
        raw = self._raw_spans(text, sample.origin, sample.language)
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
        return SampleResult(tuple(findings), tuple(sorted(filtered.items())))

    def _raw_spans(self, text: str, filename: str, language: str | None) -> set[_Raw]:
        raw: set[_Raw] = set()
        low = lower_same_length(text)
        for detector in self.text_detectors:
            if any(keyword in low for keyword in detector.keywords):
                raw.update(
                    _Raw(s, e, detector) for s, e in detector.spans(text, filename, language)
                )
        for start, hits in self._candidate_lines(low).items():
            end = _line_end(text, start)
            low_line = low[start:end]
            chosen = [d for d in hits if d.line_filter is None or d.line_filter.search(low_line)]
            for offset, segment in _segments(text[start:end], hits) if chosen else ():
                for detector in chosen:
                    for s, e in detector.spans(segment, filename, language):
                        raw.add(_Raw(start + offset + s, start + offset + e, detector))
        return raw

    def _candidate_lines(self, low: str) -> dict[int, dict[Detector, list[int]]]:
        """line start -> detectors whose hints occur on the line -> hit columns."""
        positions: list[tuple[int, int]] = []
        for group, needle in enumerate(self.keywords):
            positions.extend((pos, group) for pos in _find_all(low, needle))
        base = len(self.keywords)
        for group, regex in enumerate(self.triggers, start=base):
            positions.extend((match.start(), group) for match in regex.finditer(low))
        positions.sort()
        hits: dict[int, dict[Detector, list[int]]] = {}
        for pos, group in positions:
            start = low.rfind("\n", 0, pos) + 1
            line_hits = hits.setdefault(start, {})
            for detector in self.groups[group]:
                line_hits.setdefault(detector, []).append(pos - start)
        return hits


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


def _index(detectors: Iterable[Detector], attribute: str) -> dict[str, tuple[Detector, ...]]:
    index: dict[str, list[Detector]] = defaultdict(list)
    for detector in detectors:
        for needle in getattr(detector, attribute):
            index[needle].append(detector)
    return {needle: tuple(ds) for needle, ds in index.items()}


def _find_all(haystack: str, needle: str) -> Iterator[int]:
    pos = haystack.find(needle)
    while pos >= 0:
        yield pos
        pos = haystack.find(needle, pos + 1)


def _segments(line: str, hits: dict[Detector, list[int]]) -> list[tuple[int, str]]:
    """The whole line, or for a very long line the windows around its hits."""
    if len(line) <= MAX_LINE:
        return [(0, line)]
    windows: list[list[int]] = []
    for column in sorted(set(chain.from_iterable(hits.values()))):
        start, end = max(0, column - WINDOW), min(len(line), column + WINDOW)
        if windows and start <= windows[-1][1]:
            windows[-1][1] = max(windows[-1][1], end)
        else:
            windows.append([start, end])
    return [(start, line[start:end]) for start, end in windows]


def _judge(
    item: _Raw, text: str, sample: Sample, context: SourceContext
) -> str | tuple[Context, tuple[int, int] | None]:
    """A filter's reason to drop the candidate, or its context to keep it."""
    line_start = text.rfind("\n", 0, item.start) + 1
    previous_start = text.rfind("\n", 0, max(line_start - 1, 0)) + 1
    candidate = Candidate(
        value=text[item.start : item.end],
        secret_type=item.detector.secret_type,
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
            secret_type=raw.detector.secret_type,
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
    """Scan samples in this process, inside detect-secrets' scoped settings."""
    scanner = scanner_for(detectors)
    with scoped_settings():
        return [_redacted(scanner.scan(sample)) for sample in samples]


def _redacted(result: SampleResult) -> SampleResult:
    """Secrets in a sample's id, origin or context names do not reach its findings."""
    if not result.findings:
        return result
    return replace(result, findings=tuple(redact_finding(f) for f in result.findings))


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
            yield from result.findings
        chars = sum(len(s.text) for s in chunk)
        summary.samples += len(chunk)
        summary.chars += chars
        if progress is not None:
            progress(len(chunk), chars)
    summary.skipped.update(stats.skipped)
    summary.skipped_files.extend(stats.skipped_files)


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
