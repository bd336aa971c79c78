"""The benchmarks' figures, on hand-made samples."""

from __future__ import annotations

import pytest

from ops.figures import late_figures, percentile, ratio, steady_rate


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100, shuffled order does not matter
    assert percentile(list(reversed(values)), 0.5) == 51.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.0) == 1.0 and percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0


def test_steady_rate_is_measured_between_10_and_90_percent() -> None:
    # 1000 messages: a slow start (100 in 10 s), then 100/s, then a slow tail
    samples = [(0.0, 0), (10.0, 100), (18.0, 900), (30.0, 1000)]
    assert steady_rate(samples, 1000) == pytest.approx(100.0)
    assert steady_rate([(0.0, 0), (1.0, 50)], 1000) is None  # never reached 90 %


def test_late_figures() -> None:
    f = late_figures([0.1, 0.2, 0.3, 5.0], [0.2, 0.3, 0.4, 5.5])
    assert f == {"n": 4, "p50": 0.3, "p99": 5.0, "max": 5.0, "min": 0.1,
                 "seen_p50": 0.4, "seen_p99": 5.5, "seen_max": 5.5}
    assert late_figures([], []) == {"n": 0}


def test_ratio() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None and ratio(3.0, 0.0) is None and ratio(3.0, None) is None
