"""Whole speed traces: additive rise per clean period, multiplicative fall once per period."""

from __future__ import annotations

import random

import pytest

from kmta.policy.speed import Outcome, SpeedState, initial, observe, outcome_for, trace
from schemas.rules import SpeedRule

C, T, L, N = Outcome.CLEAN, Outcome.THROTTLE, Outcome.LOCK, Outcome.NEUTRAL
RULE = SpeedRule(min=1, max=100, start=10, increase=0.1, decrease=0.5)
TACT = 60.0


def test_whole_trace() -> None:
    events = [
        (0, C),
        (30, C),  # first period: clean, speed unchanged until it closes
        (60, C),  # period [0, 60) closed clean: +10
        (125, C),  # [60, 120) clean: +10
        (130, T),  # throttle: halve at once
        (140, T),
        (150, L),  # same period: only counted
        (185, C),  # [120, 180) had throttles: no rise
        (250, C),  # [180, 240) clean: +10
        (1000, C),  # [240, 300) clean: +10; the empty periods after it change nothing
        (1030, T),  # [960, 1020) clean: +10, then halve
        (1031, N),
    ]
    assert trace(RULE, TACT, events, start=0) == [
        (0, 10),
        (30, 10),
        (60, 20),
        (125, 30),
        (130, 15),
        (140, 15),
        (150, 15),
        (185, 15),
        (250, 25),
        (1000, 35),
        (1030, 22.5),
        (1031, 22.5),
    ]


def test_rises_to_max_and_stays() -> None:
    events = [(60.0 * i, C) for i in range(20)]
    speeds = [s for _, s in trace(RULE, TACT, events, start=0)]
    assert speeds[:11] == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 100]
    assert speeds[-1] == 100


def test_falls_multiplicatively_to_min_and_not_below() -> None:
    events = [(60.0 * i + 1, T) for i in range(8)]
    speeds = [s for _, s in trace(RULE, TACT, events, start=0)]
    assert speeds == [5, 2.5, 1.25, 1, 1, 1, 1, 1]


def test_neutral_changes_nothing_and_does_not_count_as_clean() -> None:
    speeds = [s for _, s in trace(RULE, TACT, [(0, N), (61, N), (122, N)], start=0)]
    assert speeds == [10, 10, 10]


def test_adapt_every_sets_the_decision_period() -> None:
    rule = RULE.model_copy(update={"adapt_every": 300.0})
    events = [(0, C), (60, T), (120, T), (301, C), (601, C), (650, T), (700, T)]
    assert trace(rule, TACT, events, start=0) == [
        (0, 10),
        (60, 5),
        (120, 5),
        (301, 5),
        (601, 15),
        (650, 7.5),
        (700, 7.5),
    ]


@pytest.mark.parametrize("seed", range(20))
def test_never_outside_min_max(seed: int) -> None:
    rng = random.Random(seed)
    now, events = 0.0, []
    for _ in range(500):
        now += rng.choice([1, 5, 30, 61, 400])
        events.append((now, rng.choice([C, C, C, T, L, N])))
    for _, speed in trace(RULE, TACT, events, start=0):
        assert RULE.min <= speed <= RULE.max


def test_learned_speed_wins_and_is_clamped() -> None:
    assert initial(RULE, 5.0).speed == 10
    assert initial(RULE, 5.0, learned=42.0) == SpeedState(speed=42.0, period_start=5.0)
    assert initial(RULE, 5.0, learned=1e9).speed == 100
    assert initial(RULE, 5.0, learned=0.01).speed == 1
    assert initial(SpeedRule(min=3, max=50), 0).speed == 3  # no start: the minimum


def test_live_edit_of_max_reclamps_on_the_next_event() -> None:
    state = initial(RULE, 0, learned=90)
    lower = RULE.model_copy(update={"max": 40.0, "start": 10.0})
    assert observe(state, N, lower, TACT, 1).speed == 40


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
