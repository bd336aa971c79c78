"""Threshold tracking for reply rules: "3 matches within 10 minutes" triggers the rule."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.rules import ReplyRule

__all__ = ["Hits", "lock_until", "record"]


@dataclass(frozen=True)
class Hits:
    """Times at which one reply rule matched recently (per ISP, or per source IP)."""

    times: tuple[float, ...] = ()


def record(hits: Hits, rule: ReplyRule, now: float) -> tuple[Hits, bool]:
    """Add a match at ``now``, forget matches older than ``rule.within``; return the new hits
    and whether the rule triggered (``rule.threshold`` matches in the window). Triggering resets
    the count, so a steady stream of matches triggers once per ``threshold`` matches."""
    times = (*(t for t in hits.times if now - t < rule.within), now)
    if len(times) >= rule.threshold:
        return Hits(), True
    return Hits(times), False


def lock_until(rule: ReplyRule, now: float) -> float:
    """When a lock (or throttle) started by ``rule`` at ``now`` ends."""
    return now + (rule.duration or 0.0)
