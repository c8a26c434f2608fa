"""The benchmark's arithmetic: percentiles and the median [min-max] summary."""

from __future__ import annotations

import pytest

from bench.stats import Figure, Target, percentile


@pytest.mark.parametrize(
    ("fraction", "expected"), [(0.5, 50.0), (0.95, 95.0), (0.99, 99.0), (1.0, 100.0), (0.0, 1.0)]
)
def test_percentile_is_nearest_rank(fraction: float, expected: float) -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert percentile(values, fraction) == expected


def test_figure_summarises_runs_as_median_with_range() -> None:
    figure = Figure("k", "label", "tasks/s", [3000.0, 1000.0, 2000.0])
    assert figure.median == 2000.0
    assert figure.text() == "2,000 tasks/s [1,000-3,000]"
    assert figure.to_json()["min"] == 1000.0
    assert figure.to_json()["max"] == 3000.0


def test_figure_without_runs_says_not_measured() -> None:
    figure = Figure("k", "label", "ms")
    assert figure.text() == "not measured"
    assert figure.to_json()["median"] is None


@pytest.mark.parametrize(
    ("met", "verdict"), [(True, "met"), (False, "MISSED"), (None, "not measured")]
)
def test_target_verdict_is_plain(met: bool | None, verdict: str) -> None:
    assert Target("t", "< 10%", "12%", met).verdict == verdict
