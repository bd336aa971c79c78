"""Reply-rule thresholds ("3 matches in 10 minutes") and lock expiry."""

from __future__ import annotations

from kmta.policy.locks import Hits, lock_until, record
from schemas.rules import ReplyRule

RULE = ReplyRule(name="r", match="x", action="lock", duration="30m", threshold=3, within="10m")
T0 = 1_000_000.0


def _feed(times: list[float]) -> list[bool]:
    hits, out = Hits(), []
    for t in times:
        hits, triggered = record(hits, RULE, t)
        out.append(triggered)
    return out


def test_three_within_ten_minutes_trigger() -> None:
    assert _feed([T0, T0 + 60, T0 + 599]) == [False, False, True]


def test_old_hits_are_forgotten() -> None:
    assert _feed([T0, T0 + 60, T0 + 600, T0 + 650]) == [False, False, False, True]
    assert _feed([T0, T0 + 60, T0 + 600, T0 + 700]) == [False] * 4
    assert _feed([T0, T0 + 601, T0 + 1202, T0 + 1803]) == [False] * 4


def test_trigger_resets_the_count() -> None:
    assert _feed([T0 + i for i in range(7)]) == [False, False, True, False, False, True, False]


def test_threshold_one_triggers_at_once() -> None:
    rule = ReplyRule(name="r", match="x", action="lock", duration="2h")
    assert record(Hits(), rule, T0) == (Hits(), True)


def test_hits_are_immutable_values() -> None:
    hits, _ = record(Hits(), RULE, T0)
    again, _ = record(hits, RULE, T0 + 1)
    assert hits == Hits((T0,)) and again == Hits((T0, T0 + 1))


def test_lock_start_and_expiry() -> None:
    until = lock_until(RULE, T0)
    assert until == T0 + 1800
    def locked(now: float) -> bool:
        return now < until
    assert locked(T0) and locked(T0 + 1799.9) and not locked(T0 + 1800)
