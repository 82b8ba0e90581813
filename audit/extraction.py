"""Measure how much of each secret a model gives back: MA, EL_n and verbatim extraction.

`score_probes` works on any in-memory causal LM (a model being unlearned included) and
`measure_probes` turns its scores into Measurement records; `measure_findings` goes
from findings and sample texts to Measurements on a `LoadedModel`.

How the work is batched (all batches are cut by a token budget, so memory is bounded):

- **MA**: one teacher-forced forward pass per batch of probes. Rows are left-padded, so
  every row's secret ends at the last position; only the logits of the last m+1
  positions are computed and the argmax at every secret position is taken at once.
- **Greedy decoding**: every (finding, i) pair EL needs, prefix + secret[:i] decoding
  m−i tokens, is one row; the i = 0 row decodes m + margin tokens and doubles as the
  verbatim greedy attack. Rows are left-padded with correct position ids and decoded
  with a KV cache in our own loop over ``model(...)`` calls rather than ``generate``:
  each row needs a different number of tokens, there is no stopping on EOS, only the
  last logits are computed, and rows leave the batch as soon as they are done.
- **Sampled attack** (optional): K rows per finding decoded with temperature/top-k
  sampling (Gumbel-max); each row draws from its own generator seeded by (seed,
  finding id, draw), so results do not depend on batch size or order.

Batched results equal unbatched ones: padding is masked out and positions are the
ones the unpadded sequence would have (tests/audit/test_extraction.py checks it).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from audit import metrics
from audit.measurements import Measurement, Thresholds
from audit.model import context_length_of, forward, model_device, new_cache, pad_token_id
from audit.probes import (
    DEFAULT_DECODE_MARGIN,
    DEFAULT_PREFIX_TOKENS,
    DEFAULT_SECRET_TOKENS,
    Probe,
    build_probes,
)
from gate.errors import InputError

if TYPE_CHECKING:
    import torch
    from rich.progress import Progress
    from transformers import PreTrainedTokenizerBase

    from audit.findings import Finding
    from audit.model import LoadedModel

MEASUREMENT_NS = (3, 5, 10)  # the EL_n a Measurement records
Chooser = Callable[["torch.Tensor"], "torch.Tensor"]  # (B, V) logits -> (B,) token ids


@dataclass(frozen=True)
class MeasureConfig:
    """How to measure; the defaults suit a CPU and scale to a GPU via batch_tokens."""

    batch_tokens: int = 16384  # padded tokens per batch (rows × longest row): bounds memory
    el_ns: tuple[int, ...] = MEASUREMENT_NS  # n-gram sizes for EL_n
    decode_margin: int = DEFAULT_DECODE_MARGIN  # greedy extraction decodes m + margin tokens
    extraction: bool = True  # run the verbatim attack (calibration turns it off)
    samples: int = 0  # sampled-attack decodes per finding (0: off)
    temperature: float = 1.0  # sampling temperature (> 0)
    top_k: int = 40  # sample among the k likeliest tokens (0: the whole vocabulary)
    seed: int = 0  # seeds the sampled attack

    def __post_init__(self) -> None:
        if self.batch_tokens < 1:
            raise InputError("batch tokens must be at least 1")
        if not self.el_ns or min(self.el_ns) < 1:
            raise InputError("EL n-gram sizes must be positive")
        if self.decode_margin < 0 or self.samples < 0 or self.top_k < 0:
            raise InputError("decode margin, samples and top-k must not be negative")
        if not self.temperature > 0:
            raise InputError("the sampling temperature must be > 0")


@dataclass(frozen=True)
class ProbeScores:
    """The metrics of one probe (no secret in here)."""

    finding_id: str
    ma: float
    el: Mapping[int, float]  # n -> EL_n
    extracted_greedy: bool | None  # None when extraction was off
    extracted_sampled: bool | None  # None when the sampled attack was off
    samples: int
    longest_leaked_prefix: int


@dataclass(frozen=True)
class _Row:
    """One sequence to decode: the prompt and how many tokens to decode after it."""

    key: tuple[int, int]  # (probe index, EL offset i or sample number)
    prompt: tuple[int, ...]
    steps: int


class _Tracker:
    """Progress phases on an optional rich Progress."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress

    @contextmanager
    def phase(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        if self.progress is None:
            yield lambda _n: None
            return
        progress = self.progress
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def score_probes(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    probes: Sequence[Probe],
    config: MeasureConfig | None = None,
    *,
    progress: Progress | None = None,
) -> list[ProbeScores]:
    """MA, EL_n (for config.el_ns) and, if enabled, verbatim extraction for each probe."""
    import torch

    config = config or MeasureConfig()
    if not probes:
        return []
    tracker = _Tracker(progress)
    pad_id = pad_token_id(tokenizer, model)
    with _measuring(model), torch.no_grad():
        hits = _teacher_forced(model, probes, pad_id, config, tracker)
        greedy = _decode(model, _greedy_rows(model, probes, config), pad_id, config, tracker)
        sampled = None
        if config.extraction and config.samples:
            rows = _sample_rows(model, probes, config)
            sampler = _sampler_for(probes, config, model_device(model))
            sampled = _decode(model, rows, pad_id, config, tracker, sampler=sampler)
    return [
        _scores(
            j, probe, hits[j], greedy=greedy, sampled=sampled, tokenizer=tokenizer, config=config
        )
        for j, probe in enumerate(probes)
    ]


def memorization_accuracies(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    probes: Sequence[Probe],
    config: MeasureConfig | None = None,
) -> list[float]:
    """MA alone (one teacher-forced pass per batch): the cheapest check, e.g. per epoch."""
    import torch

    config = config or MeasureConfig()
    if not probes:
        return []
    pad_id = pad_token_id(tokenizer, model)
    with _measuring(model), torch.no_grad():
        hits = _teacher_forced(model, probes, pad_id, config, _Tracker(None))
    return [sum(h) / len(h) for h in hits]


def extraction_likelihoods(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    probes: Sequence[Probe],
    config: MeasureConfig | None = None,
) -> list[dict[int, float]]:
    """EL_n alone for n in config.el_ns (n -> EL_n per probe), from batched cached decoding."""
    import torch

    config = replace(config or MeasureConfig(), extraction=False)
    if not probes:
        return []
    pad_id = pad_token_id(tokenizer, model)
    with _measuring(model), torch.no_grad():
        rows = _greedy_rows(model, probes, config)
        greedy = _decode(model, rows, pad_id, config, _Tracker(None))
    return [_el(j, probe, greedy, config.el_ns) for j, probe in enumerate(probes)]


def _el(
    j: int, probe: Probe, greedy: Mapping[tuple[int, int], list[int]], ns: Sequence[int]
) -> dict[int, float]:
    decodes = {i: greedy[(j, i)] for i in metrics.el_offsets(probe.m, ns)}
    return {n: metrics.extraction_likelihood(probe.secret_ids, decodes, n) for n in ns}


def measure_probes(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    probes: Sequence[Probe],
    thresholds: Thresholds,
    config: MeasureConfig | None = None,
    *,
    progress: Progress | None = None,
) -> list[Measurement]:
    """One Measurement per probe; EL_3/5/10 and greedy extraction are always measured."""
    config = config or MeasureConfig()
    config = replace(
        config, extraction=True, el_ns=tuple(sorted(set(config.el_ns) | set(MEASUREMENT_NS)))
    )
    scores = score_probes(model, tokenizer, probes, config, progress=progress)
    return [_measurement(p, s, thresholds) for p, s in zip(probes, scores, strict=True)]


def measure_findings(
    loaded: LoadedModel,
    findings: Sequence[Finding],
    texts: Mapping[str, str],
    thresholds: Thresholds,
    config: MeasureConfig | None = None,
    *,
    prefix_tokens: int = DEFAULT_PREFIX_TOKENS,
    max_secret_tokens: int = DEFAULT_SECRET_TOKENS,
    progress: Progress | None = None,
) -> list[Measurement]:
    """Build probes from findings and their sample texts, and measure them."""
    config = config or MeasureConfig()
    probes = build_probes(
        findings,
        texts,
        loaded.tokenizer,
        context_length=loaded.context_length,
        prefix_tokens=prefix_tokens,
        max_secret_tokens=max_secret_tokens,
        decode_margin=config.decode_margin,
    )
    return measure_probes(
        loaded.model, loaded.tokenizer, probes, thresholds, config, progress=progress
    )


def _measurement(probe: Probe, scores: ProbeScores, thresholds: Thresholds) -> Measurement:
    return Measurement(
        finding_id=probe.finding_id,
        sample_id=probe.sample_id,
        secret_type=probe.secret_type,
        ma=scores.ma,
        el_3=scores.el[3],
        el_5=scores.el[5],
        el_10=scores.el[10],
        extracted_greedy=bool(scores.extracted_greedy),
        extracted_sampled=scores.extracted_sampled,
        samples=scores.samples,
        longest_leaked_prefix=scores.longest_leaked_prefix,
        secret_tokens=probe.m,
        prefix_tokens=len(probe.prefix_ids),
        truncated=probe.truncated,
        memorized=thresholds.memorized(scores.ma, scores.el[10]),
    )


def _scores(
    j: int,
    probe: Probe,
    hits: list[bool],
    *,
    greedy: dict[tuple[int, int], list[int]],
    sampled: dict[tuple[int, int], list[int]] | None,
    tokenizer: PreTrainedTokenizerBase,
    config: MeasureConfig,
) -> ProbeScores:
    el = _el(j, probe, greedy, config.el_ns)
    extracted: bool | None = None
    leaked = 0
    if config.extraction:
        text = _text(tokenizer, greedy[(j, 0)])
        extracted = metrics.verbatim_extracted(text, probe.secret)
        leaked = metrics.leaked_prefix_chars(text, probe.lead, probe.secret)
    any_sample: bool | None = None
    if sampled is not None:
        draws = (_text(tokenizer, sampled[(j, k)]) for k in range(config.samples))
        any_sample = any(metrics.verbatim_extracted(t, probe.secret) for t in draws)
    return ProbeScores(
        finding_id=probe.finding_id,
        ma=sum(hits) / len(hits),
        el=el,
        extracted_greedy=extracted,
        extracted_sampled=any_sample,
        samples=config.samples if sampled is not None else 0,
        longest_leaked_prefix=leaked,
    )


def _text(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    text = tokenizer.decode(ids, clean_up_tokenization_spaces=False)
    return text if isinstance(text, str) else "".join(text)


@contextmanager
def _measuring(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) while measuring; a model in training goes back to it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# --- rows and batches ---------------------------------------------------------------


def _greedy_rows(
    model: torch.nn.Module, probes: Sequence[Probe], config: MeasureConfig
) -> list[_Row]:
    """Every (probe, i) that EL needs; the i = 0 row also serves greedy extraction."""
    limit = context_length_of(model)
    rows: list[_Row] = []
    for j, probe in enumerate(probes):
        for i in metrics.el_offsets(probe.m, config.el_ns):
            steps = probe.m - i
            if i == 0 and config.extraction:
                room = limit - len(probe.prefix_ids)
                steps = max(probe.m, min(probe.m + config.decode_margin, room))
            rows.append(_Row((j, i), probe.prefix_ids + probe.secret_ids[:i], steps))
    return rows


def _sample_rows(
    model: torch.nn.Module, probes: Sequence[Probe], config: MeasureConfig
) -> list[_Row]:
    limit = context_length_of(model)
    rows: list[_Row] = []
    for j, probe in enumerate(probes):
        room = limit - len(probe.prefix_ids)
        steps = max(probe.m, min(probe.m + config.decode_margin, room))
        rows.extend(_Row((j, k), probe.prefix_ids, steps) for k in range(config.samples))
    return rows


def _batches(rows: Sequence[_Row], budget: int) -> Iterator[list[_Row]]:
    """Rows by decreasing decode length, cut so rows × (longest prompt + steps) ≤ budget."""
    ordered = sorted(rows, key=lambda r: (r.steps, len(r.prompt)), reverse=True)
    batch: list[_Row] = []
    longest = steps = 0
    for row in ordered:
        new_longest, new_steps = max(longest, len(row.prompt)), max(steps, row.steps)
        if batch and (len(batch) + 1) * (new_longest + new_steps) > budget:
            yield batch
            batch, new_longest, new_steps = [], len(row.prompt), row.steps
        batch.append(row)
        longest, steps = new_longest, new_steps
    if batch:
        yield batch


def _left_pad(
    seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ids, attention mask and the positions the unpadded rows would have."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, L)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)  # (B, L)
    for r, seq in enumerate(seqs):
        ids[r, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[r, width - len(seq) :] = 1
    positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)  # (B, L)
    return ids.to(device), mask.to(device), positions.to(device)


# --- teacher-forced pass (MA) -------------------------------------------------------


def _teacher_forced(
    model: torch.nn.Module,
    probes: Sequence[Probe],
    pad_id: int,
    config: MeasureConfig,
    tracker: _Tracker,
) -> list[list[bool]]:
    """Per probe, whether the greedy prediction at each secret position is right."""
    order = sorted(range(len(probes)), key=lambda j: len(probes[j].prefix_ids) + probes[j].m)
    order.reverse()
    hits: list[list[bool]] = [[] for _ in probes]
    with tracker.phase("teacher-forced pass (MA)", len(probes)) as advance:
        start = 0
        while start < len(order):
            width = len(probes[order[start]].prefix_ids) + probes[order[start]].m
            size = max(1, config.batch_tokens // width)
            chunk = order[start : start + size]
            for j, row in zip(
                chunk, _teacher_forced_batch(model, [probes[j] for j in chunk], pad_id), strict=True
            ):
                hits[j] = row
            advance(len(chunk))
            start += size
    return hits


def _teacher_forced_batch(
    model: torch.nn.Module, probes: Sequence[Probe], pad_id: int
) -> list[list[bool]]:
    import torch

    seqs = [p.prefix_ids + p.secret_ids for p in probes]
    ids, mask, positions = _left_pad(seqs, pad_id, model_device(model))
    k = max(p.m for p in probes)
    # Kept position L-k-1+t predicts the token at L-k+t: the last k tokens are the targets.
    logits = forward(model, ids, mask, positions, keep=k + 1)[:, :-1, :]  # (B, k, V)
    targets = ids[:, -k:]  # (B, k)
    target_mask = torch.zeros_like(targets, dtype=torch.bool)  # (B, k)
    for r, probe in enumerate(probes):
        target_mask[r, k - probe.m :] = True
    hits = metrics.greedy_hits(logits, targets, target_mask).cpu()  # (B, k)
    return [hits[r, k - p.m :].tolist() for r, p in enumerate(probes)]


# --- cached decoding (EL, greedy and sampled extraction) ----------------------------


def _decode(
    model: torch.nn.Module,
    rows: Sequence[_Row],
    pad_id: int,
    config: MeasureConfig,
    tracker: _Tracker,
    *,
    sampler: Callable[[Sequence[_Row]], Chooser] | None = None,
) -> dict[tuple[int, int], list[int]]:
    """Decode every row (greedy, or with the sampler's chooser); key -> new token ids."""
    out: dict[tuple[int, int], list[int]] = {}
    limit = context_length_of(model)
    description = "sampled attack" if sampler else "greedy decoding (EL, extraction)"
    with tracker.phase(description, len(rows)) as advance:
        for batch in _batches(rows, config.batch_tokens):
            choose = sampler(batch) if sampler else _argmax
            decoded = decode_batch(
                model,
                [r.prompt for r in batch],
                [r.steps for r in batch],
                pad_id=pad_id,
                context_length=limit,
                choose=choose,
            )
            out.update(zip((r.key for r in batch), decoded, strict=True))
            advance(len(batch))
    return out


def _argmax(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=-1)  # (B,)


def decode_batch(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    steps: Sequence[int],
    *,
    pad_id: int,
    context_length: int,
    choose: Chooser = _argmax,
) -> list[list[int]]:
    """Decode steps[r] tokens after prompts[r] for every row, with a KV cache.

    Rows must be sorted by decreasing steps: a row leaves the batch (and the cache) as
    soon as its tokens are decoded. Prompt + steps must fit the context.
    """
    import torch

    ids, mask, positions = _left_pad(prompts, pad_id, model_device(model))
    cache = new_cache(model)
    ordered = all(a >= b for a, b in itertools.pairwise(steps))
    can_shrink = ordered and hasattr(cache, "batch_select_indices")
    out = torch.zeros((len(prompts), max(steps)), dtype=torch.long)  # (B, S)
    active = len(prompts)
    for step in range(max(steps)):
        logits = forward(model, ids, mask, positions, cache=cache, keep=1)[:, -1, :]  # (b, V)
        out[:active, step] = choose(logits).cpu()
        still = sum(1 for s in steps[:active] if s > step + 1)
        if still == 0:
            break
        ids = out[:active, step : step + 1].to(mask.device)  # (b, 1)
        mask = torch.cat([mask, mask.new_ones((active, 1))], dim=1)  # (b, L+step+1)
        positions = (positions[:, -1:] + 1).clamp(max=context_length - 1)  # (b, 1)
        if can_shrink and still < active:
            keep = torch.arange(still, device=mask.device)
            cache.batch_select_indices(keep)
            ids, mask, positions, active = ids[:still], mask[:still], positions[:still], still
            choose = _narrowed(choose, still)
    return [out[r, : steps[r]].tolist() for r in range(len(prompts))]


def _narrowed(choose: Chooser, rows: int) -> Chooser:
    narrow = getattr(choose, "narrow", None)
    return narrow(rows) if callable(narrow) else choose


# --- sampled attack -----------------------------------------------------------------


def _row_seed(seed: int, finding_id: str, draw: int) -> int:
    digest = hashlib.sha256(f"{seed}\0{finding_id}\0{draw}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class _GumbelChooser:
    """Temperature/top-k sampling by the Gumbel-max trick, one generator per row."""

    def __init__(self, generators: list[Any], temperature: float, top_k: int) -> None:
        self.generators = generators
        self.temperature = temperature
        self.top_k = top_k

    def narrow(self, rows: int) -> _GumbelChooser:
        return _GumbelChooser(self.generators[:rows], self.temperature, self.top_k)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        import torch

        scores = logits.float() / self.temperature  # (B, V)
        index = None
        if 0 < self.top_k < scores.shape[-1]:
            scores, index = scores.topk(self.top_k, dim=-1)  # (B, k)
        width = scores.shape[-1]
        uniform = torch.stack(
            [torch.rand(width, generator=g, device=scores.device) for g in self.generators]
        )  # (B, k)
        pick = (scores - torch.log(-torch.log(uniform))).argmax(dim=-1)  # (B,)
        return pick if index is None else index.gather(-1, pick[:, None]).squeeze(-1)


def _sampler_for(
    probes: Sequence[Probe], config: MeasureConfig, device: torch.device
) -> Callable[[Sequence[_Row]], Chooser]:
    """Per batch, a chooser whose rows draw from generators seeded by finding and draw."""

    def make(batch: Sequence[_Row]) -> Chooser:
        import torch

        generators = []
        for row in batch:
            j, draw = row.key
            generator = torch.Generator(device=device)
            generator.manual_seed(_row_seed(config.seed, probes[j].finding_id, draw))
            generators.append(generator)
        return _GumbelChooser(generators, config.temperature, config.top_k)

    return make
