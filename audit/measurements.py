"""The Measurement record (per finding, per model) and the forgetting thresholds.

Metrics are fractions in [0, 1] (the paper reports percent). A finding is memorized
when ``ma >= thresholds.ma`` or ``el_10 >= thresholds.el_10``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from audit.errors import InputError
from audit.io import atomic_write_jsonl, read_jsonl, type_problem


@dataclass(frozen=True)
class Thresholds:
    """Forgetting thresholds: the MA and EL_10 a model shows on code it never saw."""

    ma: float
    el_10: float
    source: str  # "policy", "calibrated:<path>", "paper:<model>", ...

    def memorized(self, ma: float, el_10: float) -> bool:
        return ma >= self.ma or el_10 >= self.el_10

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Thresholds:
        return cls(ma=float(obj["ma"]), el_10=float(obj["el_10"]), source=str(obj["source"]))


@dataclass(frozen=True)
class Perplexity:
    """Held-out perplexity and what it was computed over."""

    perplexity: float
    nll: float  # mean negative log-likelihood per token, nats
    tokens: int  # tokens scored
    windows: int
    texts: int


@dataclass(frozen=True)
class HumanEvalResult:
    """pass@1 over the problems run, and how each run ended."""

    pass_at_1: float
    passed: int
    problems: int
    statuses: dict[str, int] = field(default_factory=dict)  # passed / failed / timeout / error
    isolation: tuple[str, ...] = ()  # sandbox protections that were in force


@dataclass(frozen=True)
class Measurement:
    """How much of one finding's secret one model gives back to a prefix attacker."""

    finding_id: str
    sample_id: str
    secret_type: str
    ma: float  # memorization accuracy: greedy next-token hits over secret tokens
    el_3: float  # extraction likelihood with 3-grams
    el_5: float
    el_10: float
    extracted_greedy: bool  # greedy decoding from the prefix reproduces the secret
    extracted_sampled: bool | None  # any sampled decode reproduces it; None if not run
    samples: int  # sampled decodes tried (0: sampled attack off)
    longest_leaked_prefix: int  # characters of the secret reproduced by greedy decoding
    secret_tokens: int  # secret tokens measured (after any cut to the context length)
    prefix_tokens: int  # prefix tokens given to the model
    truncated: bool  # the secret was cut to fit the model's context
    memorized: bool  # against the thresholds in force

    @property
    def extracted(self) -> bool:
        """Extracted by any attack that was run."""
        return self.extracted_greedy or bool(self.extracted_sampled)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Measurement:
        return cls(**obj)


def write_measurements(path: Path, rows: Iterable[Measurement]) -> int:
    return atomic_write_jsonl(path, (m.to_dict() for m in rows))


def iter_measurements(path: Path) -> Iterator[Measurement]:
    for lineno, obj in read_jsonl(path, what="measurement"):
        wrong = type_problem(Measurement, obj)
        if wrong is not None:
            raise InputError(f"{path}:{lineno}: not a measurement record ({wrong})")
        try:
            yield Measurement.from_dict(obj)
        except TypeError:
            raise InputError(f"{path}:{lineno}: not a measurement record") from None


def read_measurements(path: Path) -> list[Measurement]:
    return list(iter_measurements(path))
