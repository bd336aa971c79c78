"""Retry schedule: when to try a temporarily failed message again, and when to give up.

Pure arithmetic, like KumoMTA's ``kumod/src/queue/config.rs``: the rule, the attempt count and the
times come in as arguments; randomness comes from the ``rng`` the caller passes (seed it in tests).
"""

from __future__ import annotations

import math
import random

from schemas.rules import RetryRule

__all__ = ["delay", "next_attempt_at", "schedule"]


def delay(rule: RetryRule, attempts: int, rng: random.Random) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (``attempts`` >= 1)."""
    if rule.mode == "window":
        assert rule.window is not None  # the schema requires it for mode "window"
        return rng.uniform(rule.window[0], rule.window[1])
    if rule.mode == "fixed":
        base = rule.interval
    else:
        exponent = max(attempts - 1, 0)
        if rule.factor > 1:
            # Beyond the cap the exponent changes nothing; capping it avoids float overflow.
            ratio = rule.max_interval / rule.interval
            exponent = min(exponent, math.ceil(math.log(ratio, rule.factor)) if ratio > 1 else 0)
        base = min(rule.interval * rule.factor**exponent, rule.max_interval)
    if rule.jitter:
        base *= 1.0 + rng.uniform(-rule.jitter, rule.jitter)
    return base


def next_attempt_at(
    rule: RetryRule, attempts: int, accepted_at: float, now: float, rng: random.Random
) -> float | None:
    """The time of the next attempt after ``attempts`` failed attempts, or None when the message
    has expired: ``max_attempts`` reached, or the next attempt would fall after
    ``accepted_at + max_age`` (give up rather than try after the maximum age)."""
    if rule.max_attempts is not None and attempts >= rule.max_attempts:
        return None
    at = now + delay(rule, attempts, rng)
    if rule.max_age is not None and at > accepted_at + rule.max_age:
        return None
    return at


def schedule(rule: RetryRule, accepted_at: float, rng: random.Random, failures: int) -> list[float]:
    """Attempt times after the first attempt at ``accepted_at``, if every attempt fails at the
    moment it is made; at most ``failures`` entries, fewer when the message expires first."""
    times: list[float] = []
    now = accepted_at
    for attempts in range(1, failures + 1):
        at = next_attempt_at(rule, attempts, accepted_at, now, rng)
        if at is None:
            break
        times.append(at)
        now = at
    return times
