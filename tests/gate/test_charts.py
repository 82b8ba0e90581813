from __future__ import annotations

from gate.charts import bin_counts, histogram


def test_bin_counts_edges() -> None:
    assert bin_counts([0.0, 0.05, 0.1, 0.99, 1.0], bins=10) == [2, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert bin_counts([-0.1, 1.5], bins=2) == [1, 1]  # out-of-range values are clamped


def test_histogram_layout() -> None:
    chart = histogram("MA", {"before": [0.95, 0.97, 0.1], "after": [0.05]}, threshold=0.3)
    assert chart.series == ("before", "after")
    assert len(chart.bars) == 20
    tallest = max(chart.bars, key=lambda b: b.height)
    assert (tallest.count, tallest.series) == (2, 0)
    assert tallest.height == chart.plot_height  # the peak fills the plot
    assert all(chart.left <= b.x <= chart.left + chart.plot_width for b in chart.bars)
    assert chart.threshold_x == chart.left + 0.3 * chart.plot_width
    assert chart.totals == (3, 1)
    assert not chart.empty
    assert [t.label for t in chart.x_ticks] == ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]


def test_empty_histogram() -> None:
    chart = histogram("EL", {"before": []})
    assert chart.empty
    assert chart.threshold_x is None
    assert all(b.height == 0 for b in chart.bars)
