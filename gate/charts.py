"""Histograms for the HTML report, laid out in Python and drawn as inline SVG.

The template only places the rectangles and labels computed here, so the report needs
no JavaScript and fetches nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

WIDTH = 520
HEIGHT = 230
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 12, 26, 40


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    count: int
    series: int  # index into Chart.series
    label: str  # tooltip text


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class Chart:
    """A grouped histogram over [0, 1]: one bar per series in each bin."""

    title: str
    series: tuple[str, ...]
    bars: tuple[Bar, ...]
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    threshold_x: float | None  # where the forgetting threshold sits, if known
    threshold_label: str = ""
    totals: tuple[int, ...] = field(default=())  # values per series
    width: int = WIDTH
    height: int = HEIGHT
    left: int = _LEFT
    top: int = _TOP
    plot_width: int = WIDTH - _LEFT - _RIGHT
    plot_height: int = HEIGHT - _TOP - _BOTTOM

    @property
    def empty(self) -> bool:
        return not any(self.totals)


def bin_counts(values: Sequence[float], bins: int = 10) -> list[int]:
    """Counts of values in `bins` equal bins over [0, 1]; 1.0 falls in the last bin."""
    counts = [0] * bins
    for value in values:
        index = min(bins - 1, max(0, int(value * bins)))
        counts[index] += 1
    return counts


def histogram(
    title: str,
    series: Mapping[str, Sequence[float]],
    threshold: float | None = None,
    bins: int = 10,
) -> Chart:
    """Lay out a grouped histogram of fractions in [0, 1], one colour per series."""
    names = tuple(series)
    counts = [bin_counts(series[name], bins) for name in names]
    peak = max((c for row in counts for c in row), default=0) or 1
    plot_w = WIDTH - _LEFT - _RIGHT
    plot_h = HEIGHT - _TOP - _BOTTOM
    slot = plot_w / bins
    bar_w = (slot - 4) / max(1, len(names))
    bars = []
    for s, row in enumerate(counts):
        for b, count in enumerate(row):
            height = plot_h * count / peak
            low, high = b / bins, (b + 1) / bins
            bars.append(
                Bar(
                    x=round(_LEFT + b * slot + 2 + s * bar_w, 1),
                    y=round(_TOP + plot_h - height, 1),
                    width=round(bar_w, 1),
                    height=round(height, 1),
                    count=count,
                    series=s,
                    label=f"{names[s]}: {count} in [{low:.1f}, {high:.1f})",
                )
            )
    x_ticks = tuple(Tick(round(_LEFT + plot_w * i / 5, 1), f"{i / 5:.1f}") for i in range(6))
    y_ticks = tuple(Tick(round(_TOP + plot_h - plot_h * v / peak, 1), str(v)) for v in _nice(peak))
    th_x = None if threshold is None else round(_LEFT + plot_w * min(1.0, threshold), 1)
    return Chart(
        title=title,
        series=names,
        bars=tuple(bars),
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        threshold_x=th_x,
        threshold_label="" if threshold is None else f"threshold {threshold:.3f}",
        totals=tuple(len(series[name]) for name in names),
    )


def _nice(peak: int) -> list[int]:
    """Up to five whole-number ticks from 0 to the peak."""
    step = max(1, -(-peak // 4))
    return list(range(0, peak + 1, step))
