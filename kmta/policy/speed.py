"""Adaptive speed per ISP, in messages per tact: additive increase, multiplicative decrease.

``observe(state, outcome, rule, tact, now) -> state`` is a pure reducer (bytewax-style): the
caller keeps the state in a table and passes the clock in. Speed rises by ``increase * max`` after
every decision period that had clean deliveries and no throttling, and falls by the factor
``decrease`` at the first throttle of a period; further throttles in the same period only count,
so one burst of 4xx replies does not collapse the speed to the minimum.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import Enum

from kmta.policy.classify import DELIVERED, is_recipient_problem, is_throttle
from schemas.rules import SpeedRule

__all__ = ["Outcome", "SpeedState", "advance", "initial", "observe", "outcome_for", "trace"]


class Outcome(Enum):
    """What one delivery attempt says about the sending speed."""

    CLEAN = "clean"
    THROTTLE = "throttle"
    LOCK = "lock"
    NEUTRAL = "neutral"


def outcome_for(
    category: str, reply_rule_action: str | None, *, temporary: bool = False
) -> Outcome:
    """Map a classified reply (and the action of the reply rule it matched, if any) to an
    outcome. Lock beats throttle beats clean. ``temporary`` (a 4xx) makes a spam block count as
    a throttle (see ``classify.is_throttle``)."""
    if reply_rule_action == "lock":
        return Outcome.LOCK
    if reply_rule_action == "throttle" or is_throttle(category, temporary=temporary):
        return Outcome.THROTTLE
    if category == DELIVERED or is_recipient_problem(category):
        return Outcome.CLEAN
    return Outcome.NEUTRAL


@dataclass(frozen=True)
class SpeedState:
    """The speed of one ISP and the counts of the current decision period."""

    speed: float
    period_start: float
    clean: int = 0
    throttled: int = 0
    decreased_at: float | None = None


def _clamp(speed: float, rule: SpeedRule) -> float:
    return min(max(speed, rule.min), rule.max)


def initial(rule: SpeedRule, now: float, learned: float | None = None) -> SpeedState:
    """The starting state: a speed learned before a restart wins over ``rule.start``
    (default ``rule.min``); either is clamped into ``[min, max]``."""
    speed = learned if learned is not None else (rule.start if rule.start is not None else rule.min)
    return SpeedState(speed=_clamp(speed, rule), period_start=now)


def advance(state: SpeedState, rule: SpeedRule, tact: float, now: float) -> SpeedState:
    """Close the decision period(s) that ended before ``now``: a closed period with clean
    results and no throttling raises the speed once; empty periods (time jumped) change nothing.
    Also re-clamps the speed, so that a live edit of min/max takes effect."""
    period = rule.adapt_every or tact
    speed = _clamp(state.speed, rule)
    if now < state.period_start + period:
        return state if speed == state.speed else replace(state, speed=speed)
    if state.clean > 0 and state.throttled == 0:
        speed = min(speed + rule.increase * rule.max, rule.max)
    periods = math.floor((now - state.period_start) / period)
    return SpeedState(
        speed=speed,
        period_start=state.period_start + periods * period,
        decreased_at=state.decreased_at,
    )


def observe(
    state: SpeedState, outcome: Outcome, rule: SpeedRule, tact: float, now: float
) -> SpeedState:
    """Fold one outcome at time ``now`` into the state."""
    state = advance(state, rule, tact, now)
    if outcome in (Outcome.THROTTLE, Outcome.LOCK):
        if state.decreased_at is None or state.decreased_at < state.period_start:
            return replace(
                state,
                speed=_clamp(state.speed * rule.decrease, rule),
                throttled=state.throttled + 1,
                decreased_at=now,
            )
        return replace(state, throttled=state.throttled + 1)
    if outcome is Outcome.CLEAN:
        return replace(state, clean=state.clean + 1)
    return state


def trace(
    rule: SpeedRule, tact: float, events: Iterable[tuple[float, Outcome]], start: float
) -> list[tuple[float, float]]:
    """``(time, speed)`` after each event, starting from ``initial(rule, start)``."""
    state = initial(rule, start)
    out: list[tuple[float, float]] = []
    for now, outcome in events:
        state = observe(state, outcome, rule, tact, now)
        out.append((now, state.speed))
    return out
