"""Whole retry schedules per mode; exhaustion by attempts and by max age."""

from __future__ import annotations

import random

import pytest

from kmta.policy.kb import KnowledgeBase
from kmta.policy.retry import next_attempt_at, schedule
from schemas.rules import RetryRule

T0 = 1_700_000_000.0
H = 3600.0


def test_fixed_schedule() -> None:
    rule = RetryRule(mode="fixed", interval="10m", max_attempts=5)
    assert schedule(rule, T0, random.Random(1), failures=10) == [T0 + 600 * i for i in (1, 2, 3, 4)]


def test_growing_schedule_doubles_up_to_the_cap() -> None:
    rule = RetryRule(mode="growing", interval="5m", factor=2, max_interval="1h", max_age="1d")
    times = schedule(rule, T0, random.Random(1), failures=8)
    gaps = [round(b - a) for a, b in zip([T0, *times], times, strict=False)]
    assert gaps == [300, 600, 1200, 2400, 3600, 3600, 3600, 3600]


def test_default_rule_is_growing_from_5_minutes_capped_at_4_hours_for_3_days() -> None:
    rule = KnowledgeBase.load().effective("example.com").retry
    assert (rule.mode, rule.interval, rule.factor, rule.max_interval, rule.max_age) == (
        "growing",
        300.0,
        2.0,
        4 * H,
        3 * 86400.0,
    )
    times = schedule(rule.model_copy(update={"jitter": 0.0}), T0, random.Random(1), failures=100)
    gaps = [round(b - a) for a, b in zip([T0, *times], times, strict=False)]
    assert gaps[:7] == [300, 600, 1200, 2400, 4800, 9600, 14400]
    assert set(gaps[7:]) == {14400}
    assert times[-1] <= T0 + 3 * 86400 < times[-1] + 4 * H  # the last try inside max_age


def test_growing_with_jitter_stays_within_the_share() -> None:
    rule = RetryRule(
        mode="growing", interval=100, factor=2, max_interval=800, jitter=0.2, max_age="30d"
    )
    for seed in range(200):
        rng = random.Random(seed)
        for attempts, base in [(1, 100), (2, 200), (3, 400), (4, 800), (9, 800)]:
            at = next_attempt_at(rule, attempts, T0, T0, rng)
            assert at is not None and base * 0.8 <= at - T0 <= base * 1.2


def test_window_times_all_inside_the_window() -> None:
    rule = RetryRule(mode="window", window=("1h", "3h"), max_age="7d")
    seen = []
    for seed in range(500):
        at = next_attempt_at(rule, 1, T0, T0 + 10, random.Random(seed))
        assert at is not None and T0 + 10 + H <= at <= T0 + 10 + 3 * H
        seen.append(at - T0 - 10)
    assert min(seen) < 1.2 * H and max(seen) > 2.8 * H  # spread over the window, not one point


def test_window_schedule_is_reproducible_per_seed() -> None:
    rule = RetryRule(mode="window", window=("10m", "20m"), max_attempts=4)
    a = schedule(rule, T0, random.Random(7), failures=10)
    assert a == schedule(rule, T0, random.Random(7), failures=10)
    assert len(a) == 3
    gaps = [b - x for x, b in zip([T0, *a], a, strict=False)]
    assert all(600 <= g <= 1200 for g in gaps)


@pytest.mark.parametrize("attempts", [3, 4, 10])
def test_exhausted_by_attempts(attempts: int) -> None:
    rule = RetryRule(mode="fixed", interval=60, max_attempts=3, max_age=None)
    assert next_attempt_at(rule, attempts, T0, T0, random.Random(0)) is None
    assert next_attempt_at(rule, 2, T0, T0, random.Random(0)) == T0 + 60


def test_exhausted_by_max_age_rather_than_trying_late() -> None:
    rule = RetryRule(mode="fixed", interval="1h", max_age="3h")
    assert (
        next_attempt_at(rule, 1, T0, T0 + 2 * H, random.Random(0)) == T0 + 3 * H
    )  # exactly at max age
    assert next_attempt_at(rule, 1, T0, T0 + 2 * H + 1, random.Random(0)) is None
    assert schedule(rule, T0, random.Random(0), failures=10) == [T0 + H, T0 + 2 * H, T0 + 3 * H]


def test_huge_attempt_count_does_not_overflow() -> None:
    rule = RetryRule(mode="growing", interval=60, factor=10, max_interval="4h", max_age="3650d")
    assert next_attempt_at(rule, 100_000, T0, T0, random.Random(0)) == T0 + 4 * H
