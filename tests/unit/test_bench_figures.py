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


def test_apply_delay_quantiles_are_of_the_run_between_two_scrapes() -> None:
    from scripts.bench import apply_delay_buckets, bucket_quantile
    before_text = ('kmta_event_apply_delay_seconds_bucket{le="1.0"} 10.0\n'
                   'kmta_event_apply_delay_seconds_bucket{le="2.0"} 10.0\n'
                   'kmta_event_apply_delay_seconds_bucket{le="+Inf"} 10.0\n')
    after_text = ('kmta_event_apply_delay_seconds_bucket{le="1.0"} 60.0\n'
                  'kmta_event_apply_delay_seconds_bucket{le="2.0"} 110.0\n'
                  'kmta_event_apply_delay_seconds_bucket{le="+Inf"} 110.0\n'
                  'kmta_event_apply_delay_max_seconds 1.7\n')
    before, none = apply_delay_buckets(before_text)
    after, worst = apply_delay_buckets(after_text)
    assert none is None and worst == 1.7
    # 100 observations of the run: 50 at most 1 s, 50 in (1, 2]; the warm-up's 10 are left out
    assert bucket_quantile(before, after, 0.5) == 1.0
    assert bucket_quantile(before, after, 0.75) == 1.5
    assert bucket_quantile(before, after, 0.99) == pytest.approx(1.98)
    assert bucket_quantile(after, after, 0.5) is None  # nothing observed between the scrapes
    assert apply_delay_buckets("") == ({}, None)


def test_the_split_histograms_are_read_by_name() -> None:
    from scripts.bench import SPLIT, apply_delay_buckets
    name = dict(SPLIT)["record->batch"]
    text = (f'{name}_bucket{{le="1.0"}} 3.0\n{name}_bucket{{le="+Inf"}} 5.0\n'
            'kmta_event_apply_delay_seconds_bucket{le="1.0"} 9.0\n')
    assert apply_delay_buckets(text, name)[0] == {1.0: 3.0, float("inf"): 5.0}
    assert apply_delay_buckets(text)[0] == {1.0: 9.0}
