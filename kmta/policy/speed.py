"""Adaptive speed per ISP, in messages per tact per source IP: slow start, then proportional
increase and gentle multiplicative decrease.

``observe(state, outcome, rule, tact, now) -> state`` is a pure reducer (bytewax-style): the
caller keeps the state in a table and passes the clock in. Time is cut into decision periods of
``rule.adapt_every`` seconds (default: the tact). The provider's capacity is never configured;
the controller finds it, the way TCP finds a path's bandwidth:

* **slow start**: until the first throttle ever, the speed doubles after each decision period
  that had clean deliveries and no throttling, so a few periods reach the neighbourhood of the
  capacity whatever ``max`` is;
* the first throttle ends slow start and halves the speed (undoing the last doubling: the
  period before was clean at that speed);
* **after that**, each clean period raises the speed by ``increase`` times the *current* speed
  (a step that scales with the capacity found, not with ``max``), and a throttle multiplies it by
  ``decrease`` (gentle, e.g. 0.85-0.9);
* at most **one decrease per period**: the throttles that follow within a period of a decrease
  were caused by messages sent before the lower speed reached the senders; they only count (and
  spoil the period, so it does not raise the speed);
* only a **busy** period raises the speed: its attempts must reach ``BUSY`` of what the speed
  allowed for the source IPs seen in it (TCP's congestion window validation). A period spent
  sending less proves nothing about a higher speed: a small campaign, or results that reach the
  brain late (they belong to periods sent at an older, lower speed), must not inflate it.

A learned speed (``initial(..., learned=...)``, or a state kept across a restart) does not slow
start again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import Enum

from kmta.policy.classify import DELIVERED, is_recipient_problem, is_throttle
from schemas.rules import SpeedRule

__all__ = [
    "SLOW_START_FACTOR",
    "Outcome",
    "SpeedState",
    "advance",
    "decision_period",
    "initial",
    "observe",
    "outcome_for",
    "trace",
]

SLOW_START_FACTOR = 2.0
"""Speed multiplier per clean period during slow start (and divisor when it ends)."""

BUSY = 0.5
"""Share of the allowed volume a period must have used to raise the speed."""


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
    slow_start: bool = True
    sources: tuple[str, ...] = ()  # source IPs seen in the current period


def _clamp(speed: float, rule: SpeedRule) -> float:
    return min(max(speed, rule.min), rule.max)


def decision_period(rule: SpeedRule, tact: float) -> float:
    """Seconds per decision period: ``rule.adapt_every``, or the tact when that is 0."""
    return rule.adapt_every or tact


def initial(rule: SpeedRule, now: float, learned: float | None = None) -> SpeedState:
    """The starting state: a speed learned before a restart wins over ``rule.start``
    (default ``rule.min``); either is clamped into ``[min, max]``. Only a state without a
    learned speed slow-starts."""
    speed = learned if learned is not None else (rule.start if rule.start is not None else rule.min)
    return SpeedState(speed=_clamp(speed, rule), period_start=now, slow_start=learned is None)


def advance(state: SpeedState, rule: SpeedRule, tact: float, now: float) -> SpeedState:
    """Close the decision period(s) that ended before ``now``: a closed period with clean
    results and no throttling raises the speed once (doubles it in slow start); empty periods
    (time jumped) change nothing. Also re-clamps the speed, so that a live edit of min/max takes
    effect."""
    period = decision_period(rule, tact)
    speed = _clamp(state.speed, rule)
    if now < state.period_start + period:
        return state if speed == state.speed else replace(state, speed=speed)
    allowed = speed * period / tact * max(1, len(state.sources))
    if state.clean > 0 and state.throttled == 0 and state.clean >= BUSY * allowed:
        factor = SLOW_START_FACTOR if state.slow_start else 1.0 + rule.increase
        speed = _clamp(speed * factor, rule)
    periods = math.floor((now - state.period_start) / period)
    return SpeedState(
        speed=speed,
        period_start=state.period_start + periods * period,
        decreased_at=state.decreased_at,
        slow_start=state.slow_start,
    )


def observe(
    state: SpeedState,
    outcome: Outcome,
    rule: SpeedRule,
    tact: float,
    now: float,
    source: str | None = None,
) -> SpeedState:
    """Fold one outcome at time ``now`` (of an attempt from source IP ``source``) into the
    state."""
    state = advance(state, rule, tact, now)
    if source and source not in state.sources and outcome is not Outcome.NEUTRAL:
        state = replace(state, sources=tuple(sorted((*state.sources, source))))
    if outcome in (Outcome.THROTTLE, Outcome.LOCK):
        held = (
            state.decreased_at is not None
            and now - state.decreased_at < decision_period(rule, tact)
        )
        if held:
            return replace(state, throttled=state.throttled + 1)
        factor = 1.0 / SLOW_START_FACTOR if state.slow_start else rule.decrease
        return replace(
            state,
            speed=_clamp(state.speed * factor, rule),
            throttled=state.throttled + 1,
            decreased_at=now,
            slow_start=False,
        )
    if outcome is Outcome.CLEAN:
        return replace(state, clean=state.clean + 1)
    return state


def trace(
    rule: SpeedRule,
    tact: float,
    events: Iterable[tuple[float, Outcome] | tuple[float, Outcome, str | None]],
    start: float,
    learned: float | None = None,
) -> list[tuple[float, float]]:
    """``(time, speed)`` after each event, starting from ``initial(rule, start, learned)``;
    an event may carry its source IP as a third item."""
    state = initial(rule, start, learned)
    out: list[tuple[float, float]] = []
    for now, outcome, *source in events:
        state = observe(state, outcome, rule, tact, now, source[0] if source else None)
        out.append((now, state.speed))
    return out
