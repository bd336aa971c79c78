"""The benchmarks' pure figures: percentiles, steady rates, lateness summaries, ratios."""
from __future__ import annotations

from collections.abc import Sequence

__all__ = ["late_figures", "percentile", "ratio", "steady_rate"]


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0..1) of ``values`` (not empty)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def steady_rate(samples: Sequence[tuple[float, int]], n: int) -> float | None:
    """Messages per second between the moments 10 % and 90 % of ``n`` had arrived (samples of
    (time, count so far)); None when the samples do not span that."""
    lo = hi = None
    for t, c in samples:
        if lo is None and c >= 0.1 * n:
            lo = (t, c)
        if c >= 0.9 * n:
            hi = (t, c)
            break
    if lo is None or hi is None or hi[0] <= lo[0]:
        return None
    return (hi[1] - lo[1]) / (hi[0] - lo[0])


def late_figures(late: Sequence[float], seen: Sequence[float]) -> dict[str, float]:
    """How late retries were released (``late``) and seen by a reader (``seen``): count,
    median, 99th percentile, extremes."""
    if not late:
        return {"n": 0}
    return {"n": len(late), "p50": percentile(late, 0.5), "p99": percentile(late, 0.99),
            "max": max(late), "min": min(late), "seen_p50": percentile(seen, 0.5),
            "seen_p99": percentile(seen, 0.99), "seen_max": max(seen)}


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, None when either is missing or ``b`` is 0."""
    if a is None or not b:
        return None
    return a / b
