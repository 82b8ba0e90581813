"""Measure how much of each secret a model gives back: MA, EL_n and verbatim extraction.

`score_probes` works on any in-memory causal LM (a model being unlearned included) and
`measure_probes` turns its scores into Measurement records; `measure_findings` goes
from findings and sample texts to Measurements on a `LoadedModel`.

How the work is batched (every batch is cut by a token budget, so memory is bounded):
``batch_tokens`` bounds the tokens whose KV cache is held at once, and no step holds
more than `audit.model.LOGIT_BUDGET` logits (the rule is in docs/scaling.md):

- **MA**: one teacher-forced forward pass over prefix + secret per batch of probes.
  Rows are left-padded, so every secret ends at the last position; only the last m+1
  positions go through the output layer, a chunk of positions at a time
  (`audit.model.head_chunks`), and only their argmax is kept: the (B, m+1, V) logits
  never exist at once.
- **EL and greedy extraction**: every (finding, i) pair EL needs, prefix + secret[:i]
  decoding m−i tokens, is one row; the i = 0 row decodes m + margin tokens and doubles
  as the verbatim greedy attack. These rows need no prefill: their first token is the
  teacher-forced argmax at position i, and their KV cache is cut out of the
  teacher-forced pass's cache (`decoding.gather_cache`), so the prompt of each row is
  never run through the model again. Consecutive passes whose caches hold at most
  half of ``batch_tokens`` together form a group, and the rows of a group's passes
  are decoded together, in batches that mix passes (`decoding.gather_caches`): a
  decode step then runs the rows of many short passes at once instead of a few (each
  step reads every weight of the model, whatever its rows). The group's passes and
  the batches cut out of them share ``batch_tokens``: the passes take at most half,
  each decode batch the rest, and a decode batch has at most LOGIT_BUDGET / V rows.
  Decoding then runs the cached loop of `audit.decoding`. (Models whose cache drops
  positions, such as sliding-window layers, take the plain path: a left-padded
  prefill per row batch, a group's rows together.)
- **Sampled attack** (optional): K rows per finding decoded with temperature/top-k
  sampling (Gumbel-max); each row draws from its own generator seeded by (seed,
  finding id, draw), so results do not depend on batch size or order.

Under ``accelerate launch`` (`audit.distributed.Shard`) every process plans the same
groups of passes (and sampled batches) and runs every world-th one; the per-probe
scores (and per-draw hits of the sampled attack) are gathered to every process. A
batch holds the same rows whatever the number of processes, so the results are the
same as a single process's.

Batched results equal unbatched ones: padding is masked out and positions are the
ones the unpadded sequence would have (tests/audit/test_extraction.py checks it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from audit import decoding, metrics
from audit.distributed import LOCAL, Shard
from audit.errors import InputError
from audit.measurements import Measurement, Thresholds
from audit.model import (
    LOGIT_BUDGET,
    chunked_argmax,
    context_length_of,
    forward_hidden,
    model_device,
    new_cache,
    pad_token_id,
    vocab_of,
)
from audit.probes import (
    DEFAULT_DECODE_MARGIN,
    DEFAULT_PREFIX_TOKENS,
    DEFAULT_SECRET_TOKENS,
    Probe,
    build_probes,
)

if TYPE_CHECKING:
    from rich.progress import Progress
    from transformers import PreTrainedTokenizerBase

    from audit.findings import Finding
    from audit.model import LoadedModel

MEASUREMENT_NS = (3, 5, 10)  # the EL_n a Measurement records
Key = tuple[int, int]  # (probe index, EL offset i or sample number)
_FILL = 0.9  # a teacher-forced batch is cut before padding exceeds 10% of a row


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
    reuse_cache: bool = True  # EL rows start from the teacher-forced pass's cache (no prefill)

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

    key: Key
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
    shard: Shard = LOCAL,
) -> list[ProbeScores]:
    """MA, EL_n (for config.el_ns) and, if enabled, verbatim extraction for each probe.

    Probes with the same prompt and secret (copies of a file: duplication is what makes
    a model memorize, so real corpora are full of them) are scored once and the scores
    shared. The sampled attack of such a group is seeded by its smallest finding id, so
    results do not depend on the order or the number of copies. Under a launcher,
    `shard` splits the batches between the processes; every process gets every score.
    """
    unique, index = distinct_probes(probes)
    scores = _score_distinct(model, tokenizer, unique, config, progress, shard=shard)
    return [
        replace(scores[index[j]], finding_id=probe.finding_id) for j, probe in enumerate(probes)
    ]


def distinct_probes(probes: Sequence[Probe]) -> tuple[list[Probe], list[int]]:
    """The distinct probes (by prompt and secret), and for each probe its distinct index."""
    groups: dict[tuple[object, ...], list[int]] = {}
    for j, probe in enumerate(probes):
        key = (probe.prefix_ids, probe.secret_ids, probe.secret, probe.lead)
        groups.setdefault(key, []).append(j)
    unique: list[Probe] = []
    index = [0] * len(probes)
    for members in groups.values():
        first = min(members, key=lambda j: probes[j].finding_id)
        for j in members:
            index[j] = len(unique)
        unique.append(probes[first])
    return unique, index


def _score_distinct(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    probes: Sequence[Probe],
    config: MeasureConfig | None,
    progress: Progress | None,
    *,
    shard: Shard = LOCAL,
) -> list[ProbeScores]:

    config = config or MeasureConfig()
    if not probes:
        return []
    tracker = _Tracker(progress)
    pad_id = pad_token_id(tokenizer, model)
    draws: dict[Key, bool] = {}
    with _measuring(model), torch.no_grad():
        hits, greedy = _ma_and_greedy(model, probes, pad_id, config, tracker, shard=shard)
        scores = {
            j: _scores(j, probes[j], hits[j], greedy=greedy, tokenizer=tokenizer, config=config)
            for j in range(len(probes))
            if hits[j]
        }
        if config.extraction and config.samples:
            rows = _sample_rows(model, probes, config)
            sampler = _sampler_for(probes, config, model_device(model))
            sampled = _decode(model, rows, pad_id, config, tracker, sampler=sampler, shard=shard)
            draws = {
                key: metrics.verbatim_extracted(_text(tokenizer, ids), probes[key[0]].secret)
                for key, ids in sampled.items()
            }
    scores = shard.gather(scores)
    if config.extraction and config.samples:
        draws = shard.gather(draws)
        scores = {j: _with_draws(s, j, draws, config.samples) for j, s in scores.items()}
    return [scores[j] for j in range(len(probes))]


def memorization_accuracies(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    probes: Sequence[Probe],
    config: MeasureConfig | None = None,
) -> list[float]:
    """MA alone (one teacher-forced pass per batch): the cheapest check, e.g. per epoch."""

    config = config or MeasureConfig()
    if not probes:
        return []
    pad_id = pad_token_id(tokenizer, model)
    with _measuring(model), torch.no_grad():
        hits = _memorization_hits(model, probes, pad_id, config)
    return [sum(h) / len(h) for h in hits]


def extraction_likelihoods(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    probes: Sequence[Probe],
    config: MeasureConfig | None = None,
) -> list[dict[int, float]]:
    """EL_n alone for n in config.el_ns (n -> EL_n per probe), from batched cached decoding."""

    config = replace(config or MeasureConfig(), extraction=False)
    if not probes:
        return []
    pad_id = pad_token_id(tokenizer, model)
    with _measuring(model), torch.no_grad():
        _, greedy = _ma_and_greedy(model, probes, pad_id, config, _Tracker(None))
    return [_el(j, probe, greedy, config.el_ns) for j, probe in enumerate(probes)]


def _el(
    j: int, probe: Probe, greedy: Mapping[Key, list[int]], ns: Sequence[int]
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
    shard: Shard = LOCAL,
) -> list[Measurement]:
    """One Measurement per probe; EL_3/5/10 and greedy extraction are always measured."""
    config = config or MeasureConfig()
    config = replace(
        config, extraction=True, el_ns=tuple(sorted(set(config.el_ns) | set(MEASUREMENT_NS)))
    )
    scores = score_probes(model, tokenizer, probes, config, progress=progress, shard=shard)
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
    shard: Shard = LOCAL,
) -> list[Measurement]:
    """Build probes from findings and their sample texts, and measure them (this
    process's share of them under a launcher; every process gets every measurement)."""
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
        loaded.model, loaded.tokenizer, probes, thresholds, config, progress=progress, shard=shard
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
    greedy: dict[Key, list[int]],
    tokenizer: PreTrainedTokenizerBase,
    config: MeasureConfig,
) -> ProbeScores:
    """MA, EL and the greedy attack of probe j (the sampled attack is added afterwards)."""
    el = _el(j, probe, greedy, config.el_ns)
    extracted: bool | None = None
    leaked = 0
    if config.extraction:
        text = _text(tokenizer, greedy[(j, 0)])
        extracted = metrics.verbatim_extracted(text, probe.secret)
        leaked = metrics.leaked_prefix_chars(text, probe.lead, probe.secret)
    return ProbeScores(
        finding_id=probe.finding_id,
        ma=sum(hits) / len(hits),
        el=el,
        extracted_greedy=extracted,
        extracted_sampled=None,
        samples=0,
        longest_leaked_prefix=leaked,
    )


def _with_draws(
    scores: ProbeScores, j: int, draws: Mapping[Key, bool], samples: int
) -> ProbeScores:
    """The scores of probe j with the sampled attack: extracted if any draw gave it."""
    hit = any(draws[(j, k)] for k in range(samples))
    return replace(scores, extracted_sampled=hit, samples=samples)


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


def _batches(rows: Sequence[_Row], budget: int, most: int = 0) -> Iterator[list[_Row]]:
    """Rows by decreasing decode length, cut so rows × (longest prompt + steps) ≤ budget
    and (`most` > 0) rows ≤ most: each step's logits are rows × V."""
    ordered = sorted(rows, key=lambda r: (r.steps, len(r.prompt)), reverse=True)
    batch: list[_Row] = []
    longest = steps = 0
    for row in ordered:
        new_longest, new_steps = max(longest, len(row.prompt)), max(steps, row.steps)
        full = bool(most) and len(batch) >= most
        if batch and (full or (len(batch) + 1) * (new_longest + new_steps) > budget):
            yield batch
            batch, new_longest, new_steps = [], len(row.prompt), row.steps
        batch.append(row)
        longest, steps = new_longest, new_steps
    if batch:
        yield batch


def _most_rows(model: torch.nn.Module) -> int:
    """Decode rows per batch so that one step's logits stay under LOGIT_BUDGET entries."""
    return max(1, LOGIT_BUDGET // vocab_of(model))


def _probe_chunks(probes: Sequence[Probe], budget: int) -> Iterator[list[int]]:
    """Probe indices by decreasing length, cut so that rows × longest row ≤ budget and
    padding stays small: every row is at least _FILL of its chunk's longest row."""
    order = sorted(range(len(probes)), key=lambda j: -(len(probes[j].prefix_ids) + probes[j].m))
    chunk: list[int] = []
    width = 0
    for j in order:
        length = len(probes[j].prefix_ids) + probes[j].m
        if chunk and ((len(chunk) + 1) * width > budget or length < _FILL * width):
            yield chunk
            chunk = []
        if not chunk:
            width = length
        chunk.append(j)
    if chunk:
        yield chunk


# --- teacher-forced pass, and the greedy rows that start from it ----------------------


@dataclass
class _Pass:
    """A teacher-forced pass over a chunk of probes: predictions and (maybe) its cache."""

    probes: list[Probe]
    preds: torch.Tensor  # (B, k+1) argmax at the last k+1 positions, on the CPU
    hits: list[list[bool]]  # per probe, per secret token
    cache: object | None  # the pass's KV cache, when rows can be cut out of it
    width: int  # padded length L of the pass


def _teacher_forced(
    model: torch.nn.Module, probes: list[Probe], pad_id: int, *, keep_cache: bool
) -> _Pass:
    """One forward pass over prefix + secret for every probe; MA hits at once."""

    seqs = [p.prefix_ids + p.secret_ids for p in probes]
    ids, mask, positions = decoding.left_pad(seqs, pad_id, model_device(model))
    k = max(p.m for p in probes)
    cache = new_cache(model) if keep_cache else None
    # Kept position L-k-1+t predicts the token at L-k+t: the last k tokens are the targets.
    hidden, head = forward_hidden(model, ids, mask, positions, cache=cache, keep=k + 1)
    flat = hidden.reshape(-1, hidden.shape[-1])  # (B·(k+1), D): logits a chunk at a time
    preds = chunked_argmax(head, flat, vocab_of(model)).view(len(probes), k + 1)  # (B, k+1)
    targets = ids[:, -k:]  # (B, k)
    target_mask = torch.zeros_like(targets, dtype=torch.bool)  # (B, k)
    for r, probe in enumerate(probes):
        target_mask[r, k - probe.m :] = True
    hits = metrics.greedy_hits(preds[:, :-1], targets, target_mask).cpu()  # (B, k)
    preds = preds.cpu()
    usable = cache if cache is not None and decoding.gatherable(cache) else None
    return _Pass(
        probes=probes,
        preds=preds,
        hits=[hits[r, k - p.m :].tolist() for r, p in enumerate(probes)],
        cache=usable,
        width=ids.shape[1],
    )


def _memorization_hits(
    model: torch.nn.Module, probes: Sequence[Probe], pad_id: int, config: MeasureConfig
) -> list[list[bool]]:
    hits: list[list[bool]] = [[] for _ in probes]
    for chunk in _probe_chunks(probes, config.batch_tokens):
        done = _teacher_forced(model, [probes[j] for j in chunk], pad_id, keep_cache=False)
        for j, row in zip(chunk, done.hits, strict=True):
            hits[j] = row
    return hits


def _ma_and_greedy(
    model: torch.nn.Module,
    probes: Sequence[Probe],
    pad_id: int,
    config: MeasureConfig,
    tracker: _Tracker,
    *,
    shard: Shard = LOCAL,
) -> tuple[list[list[bool]], dict[Key, list[int]]]:
    """MA hits and every greedy row's decode, group by group of passes (this shard's
    groups only: the other probes' hits stay empty)."""
    hits: list[list[bool]] = [[] for _ in probes]
    greedy: dict[Key, list[int]] = {}
    # With the passes' caches reused, a group of passes and the decodes cut out of them
    # share the budget: the group's passes take at most half, its decode batches the rest.
    budget = max(1, config.batch_tokens // 2 if config.reuse_cache else config.batch_tokens)
    groups = shard.mine(list(_pass_groups(list(_probe_chunks(probes, budget)), probes, budget)))
    total = sum(len(chunk) for group in groups for chunk in group)
    with tracker.phase("MA, EL and greedy extraction", total) as advance:
        for group in groups:
            passes = [
                _teacher_forced(
                    model, [probes[j] for j in chunk], pad_id, keep_cache=config.reuse_cache
                )
                for chunk in group
            ]
            greedy.update(_greedy_of_passes(model, group, passes, pad_id, config))
            for chunk, done in zip(group, passes, strict=True):
                for j, row in zip(chunk, done.hits, strict=True):
                    hits[j] = row
                advance(len(chunk))
    return hits, greedy


def _pass_groups(
    chunks: Sequence[list[int]], probes: Sequence[Probe], budget: int
) -> Iterator[list[list[int]]]:
    """Consecutive chunks of probes whose passes hold at most `budget` tokens together
    (rows × width each): their greedy rows are decoded together, so that each decode
    step runs more rows."""
    group: list[list[int]] = []
    held = 0
    for chunk in chunks:
        tokens = len(chunk) * max(len(probes[j].prefix_ids) + probes[j].m for j in chunk)
        if group and held + tokens > budget:
            yield group
            group, held = [], 0
        group.append(chunk)
        held += tokens
    if group:
        yield group


def _greedy_of_passes(
    model: torch.nn.Module,
    group: Sequence[list[int]],
    passes: Sequence[_Pass],
    pad_id: int,
    config: MeasureConfig,
) -> dict[Key, list[int]]:
    """Every greedy row of a group of passes, decoded together: from the passes' caches
    when rows can be cut out of them, else by prefilled decoding. Keys are (probe
    index, i)."""
    where: dict[int, tuple[int, int]] = {}  # probe index -> (pass, its row in the pass)
    rows: list[_Row] = []
    for p, (chunk, done) in enumerate(zip(group, passes, strict=True)):
        for row in _greedy_rows(model, done.probes, config):  # keys index the chunk
            r, i = row.key
            where[chunk[r]] = (p, r)
            rows.append(replace(row, key=(chunk[r], i)))
    if all(done.cache is not None for done in passes):
        return _decode_from_passes(model, passes, where, rows, config)
    return _decode(model, rows, pad_id, config, _Tracker(None))


def _decode_from_passes(
    model: torch.nn.Module,
    passes: Sequence[_Pass],
    where: Mapping[int, tuple[int, int]],
    rows: Sequence[_Row],
    config: MeasureConfig,
) -> dict[Key, list[int]]:
    """Decode greedy rows whose prompts are prefixes of the passes' rows (probe j is row
    where[j][1] of pass where[j][0]), from the passes' caches, in batches that mix
    passes."""

    out: dict[Key, list[int]] = {}
    device = model_device(model)
    held = sum(done.width * len(done.probes) for done in passes)
    budget = max(1, config.batch_tokens - held)  # the passes' share
    for batch in _batches(rows, budget, _most_rows(model)):
        firsts, sources, starts = _sources(passes, where, batch)
        lengths = torch.tensor([len(row.prompt) for row in batch], device=device)  # (R,)
        cache, mask = decoding.gather_caches(
            model,
            [done.cache for done in passes],
            sources=sources[:, 0].to(device),
            rows=sources[:, 1].to(device),
            starts=starts.to(device),
            lengths=lengths,
        )
        decoded = decoding.continue_decoding(
            model,
            cache,
            mask,
            lengths[:, None],
            firsts,
            steps=[row.steps for row in batch],
            context_length=context_length_of(model),
        )
        out.update(zip((row.key for row in batch), decoded, strict=True))
    return out


def _sources(
    passes: Sequence[_Pass], where: Mapping[int, tuple[int, int]], batch: Sequence[_Row]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each row of a batch (continuing prefix + secret[:i] of probe j): its first new
    token (the pass's argmax after it) (R,), its (pass, row in the pass) (R, 2), and
    where that row's real tokens start in its pass (R,)."""
    firsts, sources, starts = [], [], []
    for row in batch:
        (p, r), i = where[row.key[0]], row.key[1]
        done = passes[p]
        probe, k = done.probes[r], done.preds.shape[1] - 1
        firsts.append(int(done.preds[r, k - probe.m + i]))
        sources.append((p, r))
        starts.append(done.width - len(probe.prefix_ids) - probe.m)
    return torch.tensor(firsts), torch.tensor(sources).view(-1, 2), torch.tensor(starts)


# --- prefilled decoding (sampled attack; models whose cache cannot be cut) ------------


def _decode(
    model: torch.nn.Module,
    rows: Sequence[_Row],
    pad_id: int,
    config: MeasureConfig,
    tracker: _Tracker,
    *,
    sampler: Callable[[Sequence[_Row]], decoding.Chooser] | None = None,
    shard: Shard = LOCAL,
) -> dict[Key, list[int]]:
    """Decode every row of this shard's batches (greedy, or with the sampler's chooser);
    key -> new token ids."""
    out: dict[Key, list[int]] = {}
    limit = context_length_of(model)
    batches = shard.mine(list(_batches(rows, config.batch_tokens, _most_rows(model))))
    total = sum(len(batch) for batch in batches)
    with tracker.phase("sampled attack" if sampler else "greedy decoding", total) as advance:
        for batch in batches:
            decoded = decoding.decode_batch(
                model,
                [r.prompt for r in batch],
                [r.steps for r in batch],
                pad_id=pad_id,
                context_length=limit,
                choose=sampler(batch) if sampler else decoding.argmax,
            )
            out.update(zip((r.key for r in batch), decoded, strict=True))
            advance(len(batch))
    return out


def _sampler_for(
    probes: Sequence[Probe], config: MeasureConfig, device: torch.device
) -> Callable[[Sequence[_Row]], decoding.Chooser]:
    """Per batch, a chooser whose rows draw from generators seeded by finding and draw."""

    def make(batch: Sequence[_Row]) -> decoding.Chooser:
        seeds = [
            decoding.row_seed(config.seed, probes[row.key[0]].finding_id, row.key[1])
            for row in batch
        ]
        return decoding.GumbelChooser.seeded(seeds, config.temperature, config.top_k, device)

    return make
