"""The loop's measure when the gate also verifies from a second, shorter prompt."""

from __future__ import annotations

from collections.abc import Sequence

from audit.measurements import Measurement, Thresholds
from gate.unlearn.erase import _worst_of, _worst_screen
from gate.unlearn.trainer import Measure, Screen, is_forgotten
from tests.gate.unlearn.test_trainer import _m

THRESHOLDS = Thresholds(ma=0.5, el_10=0.5, source="test")


def test_a_finding_is_forgotten_only_when_forgotten_from_both_prompts() -> None:
    long = {"a": _m("a", ma=0.1), "b": _m("b", ma=0.1), "c": _m("c", ma=0.9)}
    short = {"a": _m("a", ma=0.1), "b": _m("b", ma=0.7), "c": _m("c", ma=0.2, extracted=True)}

    def by(table: dict[str, Measurement]) -> Measure:
        return lambda ids: [table[i] for i in ids]

    measure = _worst_of(by(long), by(short))
    rows = measure(["c", "a", "b"])
    assert [m.finding_id for m in rows] == ["c", "a", "b"]  # the order asked
    assert [is_forgotten(m, THRESHOLDS) for m in rows] == [False, True, False]
    assert rows[0].ma == 0.9
    assert rows[0].extracted_greedy  # extracted from the short prompt only


def test_the_screen_takes_the_higher_ma_and_either_extraction() -> None:
    def screen(table: dict[str, tuple[float, bool]]) -> Screen:
        return lambda ids: {i: table[i] for i in ids}

    first = screen({"a": (0.2, False), "b": (0.8, False)})
    both = _worst_screen(first, screen({"a": (0.6, False), "b": (0.1, True)}))
    ids: Sequence[str] = ["a", "b"]
    assert both(ids) == {"a": (0.6, False), "b": (0.8, True)}
