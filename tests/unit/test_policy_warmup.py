"""IP warm-up (kmta/policy/warmup.py): whole schedule traces, time in and decisions out, and the
shipped schedules checked against the knowledge base."""

from __future__ import annotations

import pytest

from kmta.policy.kb import KnowledgeBase, RulesError
from kmta.policy.speed import Signal
from kmta.policy.warmup import (
    DAY,
    HOUR,
    Pending,
    Schedule,
    WarmState,
    begin,
    caps,
    free_at,
    load_schedules,
    observe,
    pending,
    publish_due,
    remaining,
    roll,
    status,
)
from schemas.state import WarmupStatus

SCHEDULES = load_schedules()
GMAIL = SCHEDULES.for_isp("gmail")
T0 = 20788 * DAY  # 2026-12-01 00:00 UTC
TINY = Schedule(daily=(8, 12, 20), hourly=0.5)


def run_day(s: WarmState, sched: Schedule, start: float, hours: int = 24,
            throttle: set[int] | None = None, want: int | None = None
            ) -> tuple[WarmState, int]:
    """A sender with endless backlog asks every minute how much the IP may send and sends it
    (answers clean, except the attempts numbered in ``throttle``); at most ``want`` a day."""
    sent = 0
    for minute in range(hours * 60):
        now = start + minute * 60.0
        s = roll(s, sched, now)
        n = remaining(status(s, sched), now)
        assert n is not None
        if want is not None:
            n = min(n, want - sent)
        for _ in range(n):
            sig = Signal.THROTTLE if throttle and sent in throttle else Signal.CLEAN
            s = observe(s, sched, sig, now + 1.0)
            sent += 1
    return s, sent


def test_shipped_schedules_name_known_providers_and_grow() -> None:
    names = set(KnowledgeBase.load().isp_names())
    assert set(SCHEDULES.by_isp) - {"default"} <= names
    for sched in SCHEDULES.by_isp.values():
        assert list(sched.daily) == sorted(sched.daily)
        assert sched.daily[0] <= 300  # a few hundred on day one (the sources agree)
        assert 0 < sched.hourly <= 1
    assert SCHEDULES.for_isp("unknown.example") is SCHEDULES.by_isp["default"]


def test_an_override_replaces_a_table_and_bad_tables_are_refused() -> None:
    s = load_schedules({"gmail": {"daily": [5, 10], "hourly": 0.2}})
    assert s.for_isp("gmail").caps_for(1) == (5, 1)
    assert s.for_isp("gmail").caps_for(3) is None
    for bad in ({"daily": [10, 5]}, {"daily": []}, {"daily": [5], "hourly": 0},
                {"daily": [5], "burst": 3}, {"daily": [5.5]}):
        with pytest.raises(RulesError):
            load_schedules({"gmail": bad})


def test_a_clean_busy_ip_advances_one_day_per_day_within_hourly_caps() -> None:
    s, days = begin(20788, T0, GMAIL), []
    for d in range(4):
        s, sent = run_day(s, GMAIL, T0 + d * DAY)
        days.append((s.day, sent))
    # day d sends its whole cap (hourly share 1/4: four hours), and the next day is one up
    assert days == [(1, 200), (2, 300), (3, 450), (4, 680)]
    s = roll(s, GMAIL, T0 + 4 * DAY)
    assert (s.day, s.clean_days, s.step_backs) == (5, 4, 0)


def test_the_hourly_cap_spreads_a_day_over_hours() -> None:
    s = begin(20788, T0, GMAIL)
    s, sent = run_day(s, GMAIL, T0, hours=1)
    assert sent == 50  # a quarter of 200 in the first hour
    s, sent = run_day(s, GMAIL, T0 + HOUR, hours=1)
    assert sent == 50
    assert remaining(status(s, GMAIL), T0 + 2 * HOUR - 1) == 0
    assert free_at(status(s, GMAIL), T0 + 2 * HOUR - 1) == T0 + 2 * HOUR


def test_a_trickle_holds_the_day_and_an_idle_day_is_not_judged() -> None:
    s = begin(20788, T0, TINY)
    s, _ = run_day(s, TINY, T0, want=3)  # 3 of 8: not busy
    s, _ = run_day(s, TINY, T0 + DAY, want=0)  # nothing sent
    s = roll(s, TINY, T0 + 2 * DAY)
    assert (s.day, s.clean_days, s.step_backs) == (1, 0, 0)
    s, sent = run_day(s, TINY, T0 + 2 * DAY)
    assert (sent, roll(s, TINY, T0 + 3 * DAY).day) == (8, 2)


def test_throttles_over_the_clean_share_step_a_day_back() -> None:
    sched = Schedule(daily=(100, 200, 300, 400), hourly=1.0)
    s = begin(20788 - 2, T0, sched)  # started two days ago: day 3
    assert caps(s, sched) == (300, 300)
    s, sent = run_day(s, sched, T0, throttle={290, 292, 294, 296, 298, 299, 297})
    assert sent == 300  # 7 throttles (2.3 %), late in the day: no step back within it
    s = roll(s, sched, T0 + DAY)
    assert (s.day, s.step_backs) == (2, 1)
    # 2 % exactly is clean
    s, sent = run_day(s, sched, T0 + DAY, throttle={10, 20, 30, 40})
    assert (sent, roll(s, sched, T0 + 2 * DAY).day) == (200, 3)


def test_a_burst_of_throttles_steps_back_at_once_and_only_once_a_day() -> None:
    sched = Schedule(daily=(100, 200, 300, 400), hourly=1.0)
    s = begin(20788 - 2, T0, sched)
    trace = []
    for i in range(40):
        s = observe(s, sched, Signal.THROTTLE if 10 <= i < 30 else Signal.CLEAN, T0 + i)
        trace.append(s.day)
    # the fifth throttle (attempt 14, 5 of 15 > 5 %) steps back to day 2; no further step today
    assert trace.index(2) == 14 and set(trace[14:]) == {2}
    assert remaining(status(s, sched), T0 + 50) == 160  # day 2's cap minus the 40 sent
    assert roll(s, sched, T0 + DAY).day == 1  # and the throttled day steps back again


def test_a_lock_counts_as_a_throttle_and_day_one_is_the_floor() -> None:
    s = begin(20788, T0, TINY)
    for i in range(6):
        s = observe(s, TINY, Signal.LOCK, T0 + i)
    assert (s.day, s.step_backs) == (1, 1)
    assert roll(s, TINY, T0 + DAY).day == 1


def test_past_the_last_day_the_ip_is_warm() -> None:
    s = begin(20788 - 10, T0, TINY)  # started long ago
    assert caps(s, TINY) is None
    assert remaining(status(s, TINY), T0) is None
    s = begin(20788, T0, TINY)
    for d in range(3):
        s, _ = run_day(s, TINY, T0 + d * DAY)
    assert caps(roll(s, TINY, T0 + 3 * DAY), TINY) is None


def test_a_senders_view_counts_pending_and_turns_windows_without_judging() -> None:
    s = begin(20788, T0, TINY)
    for i in range(4):
        s = observe(s, TINY, Signal.CLEAN, T0 + i)
    snap = status(s, TINY)
    assert (snap.daily_cap, snap.hourly_cap, snap.sent_hour) == (8, 4, 4)
    assert remaining(snap, T0 + 10) == 0
    assert remaining(snap, T0 + HOUR, pending=1) == 3  # new hour: 8 - 4 today, 4 - 0 - 1
    assert remaining(snap, T0 + DAY) == 4  # new day: the counts clear, the caps stay
    assert free_at(snap, T0 + 10) == T0 + HOUR
    for i in range(4):
        s = observe(s, TINY, Signal.CLEAN, T0 + HOUR + i)
    assert free_at(status(s, TINY), T0 + HOUR + 10) == T0 + DAY


def test_attempts_late_in_the_last_hour_still_count_against_the_day() -> None:
    """A snapshot of hour 0 with 3 sent today; this node made 2 more late in hour 0 that
    the snapshot did not count, and hour 1 has begun: they no longer hold this hour's cap
    (4) back, but the day (8) has only 8 - 3 - 2 = 3 left (4 before: 9 attempts in the day)."""
    s = begin(20788, T0, TINY)
    for i in range(3):
        s = observe(s, TINY, Signal.CLEAN, T0 + HOUR - 300 + i)
    snap = status(s, TINY)
    late = [T0 + HOUR - 5, T0 + HOUR - 2]
    now = T0 + HOUR + 1
    p = pending(snap, now, late)
    assert (p.hour, p.day) == (0, 2)
    assert remaining(snap, now, p) == 3
    assert remaining(snap, now, len(late)) == 2  # an int counts against both caps
    assert remaining(snap, now, pending(snap, now, late, inflight=1)) == 2
    # within the snapshot's hour both caps count them: min(8 - 3 - 2, 4 - 3 - 2)
    assert pending(snap, T0 + HOUR - 1, late) == Pending(2, 2)
    assert remaining(snap, T0 + HOUR - 1, Pending(2, 2)) == 0
    # a new day: neither cap counts yesterday's attempts
    assert pending(snap, T0 + DAY + 1, late) == Pending(0, 0)
    assert remaining(snap, T0 + DAY + 1, pending(snap, T0 + DAY + 1, late)) == 4
    # the day's cap reached with them: free at the next day, not the next hour
    full = WarmupStatus(**{**snap.model_dump(), "sent_today": 6})
    assert free_at(full, now) == T0 + 2 * HOUR
    assert free_at(full, now, pending(snap, now, late)) == T0 + DAY


def test_snapshots_are_published_in_steps_not_per_message() -> None:
    s, last, published = begin(20788, T0, GMAIL), None, 0
    for i in range(50):
        s = observe(s, GMAIL, Signal.CLEAN, T0 + i)
        snap = status(s, GMAIL)
        if publish_due(last, snap):
            last, published = snap, published + 1
    # the first attempt, then every 2 (5 % of the hourly cap of 50: at 3, 5 ... 49), and at
    # the cap: 26 snapshots for 50 attempts
    assert published == 26
    assert last is not None and last.sent_hour == 50
    assert not publish_due(last, status(s, GMAIL))
    s = roll(s, GMAIL, T0 + HOUR)
    assert publish_due(last, status(s, GMAIL))  # a new hour


def _shared_hour(shares: tuple[float, ...], lag: int, split: bool = True) -> int:
    """Nodes sharing a new IP send as fast as ``remaining`` lets them, round-robin; the brain
    counts every attempt and publishes in steps (``publish_due``), and each snapshot reaches
    the nodes ``lag`` attempts later. The attempts made within the first hour."""
    s, last = begin(20788, T0, GMAIL), None
    seen: list[WarmupStatus | None] = [None] * len(shares)  # the snapshot each node has
    own: list[list[float]] = [[] for _ in shares]  # each node's attempt times
    queue: list[tuple[int, WarmupStatus]] = []  # snapshots on their way: (due at, snap)
    sent, now = 0, T0
    for _ in range(2000):
        progress = False
        for n, share in enumerate(shares):
            now += 0.1
            while queue and queue[0][0] <= sent:
                snap = queue.pop(0)[1]
                seen = [snap] * len(shares)
            snap = seen[n] or status(begin(20788, T0, GMAIL), GMAIL)
            pending = sum(1 for t in own[n] if t > snap.counted_at)
            left = remaining(snap, now, pending, share if split else 1.0)
            if not left:
                continue
            own[n].append(now)
            s = observe(s, GMAIL, Signal.CLEAN, now)
            sent, progress = sent + 1, True
            if publish_due(last, status(s, GMAIL)):
                last = status(s, GMAIL)
                queue.append((sent + lag, last))
        if not progress and not queue:
            break
    return sent


@pytest.mark.parametrize("shares", [(0.5, 0.5), (0.25, 0.75), (1 / 3, 1 / 3, 1 / 3),
                                    (0.125,) * 8])
@pytest.mark.parametrize("lag", [0, 3, 20])
def test_nodes_sharing_a_new_ip_never_pass_its_cap_together(shares, lag) -> None:
    cap = caps(begin(20788, T0, GMAIL), GMAIL)
    assert cap == (200, 50)
    sent = _shared_hour(shares, lag)
    assert sent <= 50  # exact: each node takes its share of what the snapshot left
    assert sent >= 50 - len(shares)  # what the shares' rounding leaves, at most one each


def test_nodes_sharing_a_new_ip_without_the_split_pass_its_cap() -> None:
    # the same nodes each taking all that a snapshot left (the lanes before the split)
    assert _shared_hour((0.5, 0.5), 3, split=False) > 50
