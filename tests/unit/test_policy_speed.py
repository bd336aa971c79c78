"""Whole speed traces: slow start, proportional rise per busy clean period, gentle fall once
per period; and the controller in a closed loop with a provider of a capacity it is not told."""

from __future__ import annotations

import random

import pytest

from kmta.policy.speed import (
    Outcome,
    SpeedState,
    advance,
    decision_period,
    initial,
    observe,
    outcome_for,
    trace,
)
from schemas.rules import SpeedRule

C, T, L, N = Outcome.CLEAN, Outcome.THROTTLE, Outcome.LOCK, Outcome.NEUTRAL
RULE = SpeedRule(min=1, max=100, start=4, increase=0.25, decrease=0.5)
TACT = 1.0


def period(start: float, clean: int, throttle_at: tuple[float, ...] = (), source=None) -> list:  # noqa: ANN001
    """``clean`` clean outcomes spread over [start, start + 1), plus throttles at the given
    offsets."""
    events = [(start + (i + 0.5) / clean, C, source) for i in range(clean)]
    events += [(start + dt, T, source) for dt in throttle_at]
    return sorted(events, key=lambda e: e[0])


def changes(tr: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (time, speed) points where the speed changed."""
    out, last = [], None
    for t, s in tr:
        if s != last:
            out.append((round(t, 3), round(s, 3)))
            last = s
    return out


def test_slow_start_doubles_until_the_first_throttle_then_halves() -> None:
    events = (period(0, 4) + period(1, 8) + period(2, 16) + period(3, 32, throttle_at=(0.99,))
              + period(4, 16) + period(5, 20))
    assert changes(trace(RULE, TACT, events, start=0)) == [
        (0.125, 4),  # first period at the start speed
        (1.062, 8),  # [0, 1) was clean and busy: doubled
        (2.031, 16),
        (3.016, 32),
        (3.99, 16),  # the first throttle ends slow start: back to the last clean speed
        (5.025, 20),  # [4, 5) clean: now + increase x speed (25 %), not doubled
        # [3, 4) had the throttle: no rise at 4
    ]


def test_after_slow_start_rise_is_proportional_and_fall_is_gentle() -> None:
    state = initial(RULE, 0, learned=40)  # a learned speed does not slow start
    assert state.slow_start is False
    events = period(0, 40) + period(1, 40) + period(2, 50, throttle_at=(0.5,)) + period(3, 25)
    assert changes(trace(RULE, TACT, events, start=0, learned=40)) == [
        (0.013, 40),
        (1.012, 50),  # +25 % of 40
        (2.01, 62.5),  # +25 % of 50 ([1, 2) used 40 of 50: busy enough)
        (2.5, 31.25),  # x 0.5 on the throttle
        # [2, 3) had a throttle: no rise at 3
    ]


def test_one_decrease_per_period_after_a_decrease() -> None:
    events = [(10.0, T), (10.2, T), (10.9, T), (11.05, T), (11.5, T)]
    rule = RULE.model_copy(update={"start": 64.0})
    # the first throttle halves (slow start ends); the following ones within a period of it
    # were caused by messages sent before the lower speed arrived: they only count
    assert trace(rule, TACT, events, start=10) == [
        (10.0, 32), (10.2, 32), (10.9, 32), (11.05, 16), (11.5, 16)]


def test_light_periods_do_not_raise_the_speed() -> None:
    # a period must use at least half of what the speed allowed: a trickle (a small campaign,
    # or results arriving late from periods sent at an older, lower speed) proves nothing
    state = initial(RULE, 0, learned=40)
    for k in range(10):
        for i in range(19):  # 19 of the 40 allowed
            state = observe(state, C, RULE, TACT, k + i / 19)
    assert state.speed == 40
    state = observe(state, C, RULE, TACT, 10.5)  # closes [9, 10): still light
    for i in range(20):  # 20 of 40: busy enough
        state = observe(state, C, RULE, TACT, 11 + i / 20)
    assert observe(state, C, RULE, TACT, 12.01).speed == 50


def test_busy_counts_the_source_ips_seen() -> None:
    # at speed 40 two source IPs may send 80 per period: 15 from each is light ...
    state = initial(RULE, 0, learned=40)
    for ip in ("a", "b"):
        for i in range(15):
            state = observe(state, C, RULE, TACT, i / 15, ip)
    state = observe(state, C, RULE, TACT, 1.0, "a")
    assert state.speed == 40 and state.sources == ("a",)
    # ... while 30 from the only IP seen is busy
    for i in range(29):
        state = observe(state, C, RULE, TACT, 1 + (i + 1) / 30, "a")
    assert observe(state, C, RULE, TACT, 2.0, "a").speed == 50


def test_neutral_changes_nothing_and_does_not_count() -> None:
    state = observe(initial(RULE, 0), N, RULE, TACT, 0.5, "a")
    assert state == initial(RULE, 0)
    speeds = [s for _, s in trace(RULE, TACT, [(0, N), (1.1, N), (2.2, N)], start=0)]
    assert speeds == [4, 4, 4]


def test_adapt_every_sets_the_decision_period() -> None:
    rule = RULE.model_copy(update={"adapt_every": 5.0})
    assert decision_period(rule, 60.0) == 5.0 and decision_period(RULE, 60.0) == 60.0
    events = [(i * 0.5, C) for i in range(10)] + [(5.0, C)]  # 10 clean in [0, 5): busy
    assert trace(rule, TACT, events, start=0)[-1] == (5.0, 8)
    assert advance(initial(rule, 0), rule, TACT, 4.9).speed == 4


def test_closed_loop_finds_an_undisclosed_capacity() -> None:
    """A provider accepting 25 messages per second per source IP (two IPs), refusing the
    rest; the sender sends what the speed allows each 1 s period; the speed max is 1000."""
    rule = SpeedRule(min=1, max=1000, start=4, increase=0.05, decrease=0.88)
    capacity = 25
    state = initial(rule, 0.0)
    speeds = []
    for k in range(30):
        state = advance(state, rule, 1.0, float(k))
        speeds.append(round(state.speed, 2))
        n = int(state.speed)
        events = sorted((k + (j + 0.5) / n, C if j < capacity else T, ip)
                        for ip in ("a", "b") for j in range(n))
        for t, outcome, ip in events:
            state = observe(state, outcome, rule, 1.0, t, ip)
    assert speeds == [
        4.0, 8.0, 16.0, 32.0,  # slow start: doubling per clean period
        16.0,  # the first throttle (32 > 25) halves it
        16.8, 17.64, 18.52, 19.45, 20.42, 21.44, 22.51, 23.64, 24.82, 26.06,  # +5 % a period
        22.93, 24.08, 25.29, 26.55,  # 26 > 25: x 0.88, rise again ...
        23.36, 24.53, 25.76, 27.05,
        23.8, 24.99, 26.24,
        23.09, 24.25, 25.46, 26.73,
    ]
    settled = speeds[15:]
    assert 0.9 * capacity <= sum(settled) / len(settled) <= 1.05 * capacity


@pytest.mark.parametrize("seed", range(20))
def test_never_outside_min_max(seed: int) -> None:
    rng = random.Random(seed)
    now, events = 0.0, []
    for _ in range(500):
        now += rng.choice([0.01, 0.1, 0.5, 1.1, 7])
        events.append((now, rng.choice([C, C, C, C, T, L, N]), rng.choice(["a", "b", None])))
    for _, speed in trace(RULE, TACT, events, start=0):
        assert RULE.min <= speed <= RULE.max


def test_learned_speed_wins_and_is_clamped() -> None:
    assert initial(RULE, 5.0) == SpeedState(speed=4, period_start=5.0, slow_start=True)
    assert initial(RULE, 5.0, learned=42.0) == SpeedState(
        speed=42.0, period_start=5.0, slow_start=False)
    assert initial(RULE, 5.0, learned=1e9).speed == 100
    assert initial(RULE, 5.0, learned=0.01).speed == 1
    assert initial(SpeedRule(min=3, max=50), 0).speed == 3  # no start: the minimum


def test_live_edit_of_max_reclamps_on_the_next_event() -> None:
    state = initial(RULE, 0, learned=90)
    lower = RULE.model_copy(update={"max": 40.0, "start": 10.0})
    assert observe(state, N, lower, TACT, 0.5).speed == 40


@pytest.mark.parametrize(
    ("category", "action", "temporary", "expected"),
    [
        ("rate_limit", "lock", False, L),
        ("delivered", "lock", False, L),
        ("spam_block", "throttle", False, T),
        ("rate_limit", None, False, T),
        ("timeout", None, False, T),
        ("connection_failure", "defer", False, T),
        ("spam_block", None, True, T),
        ("spam_block", None, False, N),
        ("delivered", None, False, C),
        ("bad_mailbox", "bounce", False, C),
        ("mailbox_full", None, False, C),
        ("policy", None, False, N),
        ("other_temporary", None, False, N),
    ],
)
def test_outcome_for(category: str, action: str | None, temporary: bool, expected: Outcome) -> None:
    assert outcome_for(category, action, temporary=temporary) is expected
