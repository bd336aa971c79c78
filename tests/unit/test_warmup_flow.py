"""IP warm-up across the brain and a sender lane: the brain counts a new IP's attempts and
publishes snapshots in steps; the lane sends over a new IP up to its cap (its own attempts since
the last snapshot included) and then over the pool's warm IPs."""

from __future__ import annotations

import json
import time

import pytest

from dashboard.model import Board
from kmta.config import Config
from kmta.pipeline.control import ControlError, make_command
from kmta.pipeline.rules import load_warmup, partition_map, warm_ips
from kmta.policy.kb import KnowledgeBase
from kmta.policy.speed import Signal
from kmta.policy.warmup import (
    DAY,
    HOUR,
    Schedule,
    Schedules,
    WarmPlan,
    begin,
    new_ips,
    observe,
    status,
)
from schemas import ControlAction, DeliveryEvent, Envelope, IspState, Status
from schemas.control import ALL_ISPS
from senders.lane import Lane
from senders.lanes import Lanes
from streams.brain import Row, apply_event, states_of, warmup_mark

KB = KnowledgeBase.load()
NEW, WARM = "127.0.0.3", "127.0.0.2"
TINY = Schedule(daily=(8, 12, 20), hourly=0.5)


def event(n: int, ip: str, t: float, throttle: bool = False) -> DeliveryEvent:
    if throttle:
        return DeliveryEvent(id=f"m{n}", to="u@x.test", isp="gmail", domain="x.test",
                             status=Status.DEFERRED, final=False, attempt=1, code=421,
                             enhanced_code="4.7.28", response="rate limited",
                             category="rate_limit", source_ip=ip, node="n1", timestamp=t)
    return DeliveryEvent(id=f"m{n}", to="u@x.test", isp="gmail", domain="x.test",
                         status=Status.DELIVERED, final=True, attempt=1, code=250,
                         enhanced_code="2.0.0", response="ok", category="delivered",
                         source_ip=ip, node="n1", timestamp=t)


def test_config_marks_new_ips_with_their_start_day() -> None:
    c = Config.model_validate({
        "pools": [{"name": "default", "source_ips": [WARM, NEW], "warmup": {NEW: "2026-12-01"}}],
        "warmup": {"schedules": {"gmail": {"daily": [8, 12, 20], "hourly": 0.5}}}})
    assert warm_ips(c) == {NEW: 20788}
    assert load_warmup(c).for_isp("gmail") == TINY


def test_the_brain_counts_only_new_ips_and_publishes_in_steps() -> None:
    t = 20788 * DAY + 1000.0
    plan = WarmPlan({NEW: 20788}, load_warmup(Config()))  # gmail: 200 on day 1, 50 an hour
    row = Row(isp="gmail")
    for i in range(20):
        for ip in (NEW, WARM):
            apply_event(row, event(2 * i + (ip == WARM), ip, t + i), KB, t + i, plan)
        row = Row.model_validate(json.loads(json.dumps(row.model_dump(mode="json"))))
    assert set(row.warm) == {NEW} and row.warm[NEW]["sent"] == 20
    st = {s.source_ip: s for s in states_of(row, KB.effective("gmail"), t + 21)}
    assert WARM not in st or st[WARM].warmup is None
    snap = st[NEW].warmup
    assert snap is not None and (snap.day, snap.daily_cap, snap.hourly_cap) == (1, 200, 50)
    # published every 2 attempts (5 % of the hourly cap): at 1, 3 ... 19, not at 20
    assert snap.sent_today == 19 and snap.counted_at == t + 18
    # started again (a new mark): day 1 with nothing counted
    restarted = WarmPlan({NEW: 20789}, plan.schedules)
    apply_event(row, event(98, NEW, t + 86400), KB, t + 86400, restarted)
    assert (row.warm[NEW]["day"], row.warm[NEW]["sent"], row.warm[NEW]["started"]) == (1, 1, 20789)
    # the IP's warm-up ended (removed from the config): its row and snapshot go
    apply_event(row, event(99, WARM, t + 30), KB, t + 30, WarmPlan({}, plan.schedules))
    assert row.warm == {} and all(s.warmup is None for s in
                                  states_of(row, KB.effective("gmail"), t + 31))


def test_a_throttled_new_ip_steps_back_on_its_published_state() -> None:
    t = time.time()
    sched = Schedule(daily=(100, 200, 300), hourly=1.0)
    plan = WarmPlan({NEW: int(t // 86400) - 2}, Schedules({"default": sched}))
    row = Row(isp="gmail")
    for i in range(6):
        apply_event(row, event(i, NEW, t + i, throttle=True), KB, t + i, plan)
    st = next(s for s in states_of(row, KB.effective("gmail"), t + 7) if s.source_ip == NEW)
    assert st.warmup is not None and (st.warmup.day, st.warmup.step_backs) == (2, 1)


def lane_with(start: dict[str, object], ips: list[str | None]) -> Lane:
    return Lane("gmail", None, KB.effective("gmail"), ips, warm_start=start)  # type: ignore[arg-type]


def test_a_lane_overflows_a_capped_new_ip_to_the_warm_one() -> None:
    now = time.time()
    snap = status(begin(int(now // 86400), now, TINY), TINY)
    lane = lane_with({NEW: snap}, [NEW, WARM])
    lane.conns = {WARM: 1}
    sent = 0
    while not lane.warm_capped(NEW, now):
        pick = lane.pick_ip(now)
        assert pick is not None and pick.ip == NEW  # fewer connections: the new IP first
        lane.warm_begin(NEW)
        lane.warm_note(NEW, now + sent * 0.01)
        lane.warm_end(NEW)
        sent += 1
    hour_left = HOUR - now % HOUR
    assert sent == 4  # this hour's cap (half of day 1's 8)
    pick = lane.pick_ip(now)
    assert pick is not None and pick.ip == WARM
    assert lane.blocked_until(now) is None  # the warm IP still sends
    # in flight counts too: the brain's snapshot counting 3 of them + 1 pending = capped
    s = begin(int(now // 86400), now, TINY)
    for i in range(3):
        s = observe(s, TINY, Signal.CLEAN, now + i * 0.01)
    lane.brain_state(IspState(isp="gmail", source_ip=NEW, warmup=status(s, TINY),
                              updated_at=now), now)
    assert lane.warm_capped(NEW, now)
    if hour_left > 1:  # the next hour clears the hourly count (the day still has 4)
        assert not lane.warm_capped(NEW, now + hour_left + 0.5)


def test_a_pool_of_only_new_ips_waits_for_the_next_window() -> None:
    now = time.time()
    snap = status(begin(int(now // 86400), now, TINY), TINY)
    lane = lane_with({NEW: snap}, [NEW])
    for i in range(4):
        lane.warm_note(NEW, now + i * 0.01)
    assert lane.pick_ip(now) is None
    until = lane.blocked_until(now)
    assert until == max(now + 5.0, (now // HOUR + 1) * HOUR)


def test_operator_marks_start_and_stop_a_warm_up_over_the_config() -> None:
    assert new_ips({NEW: 5}, {NEW: None, WARM: 7}) == {WARM: 7}  # a stop beats the config
    t = 20788 * DAY + 10.0
    start = make_command(ControlAction.WARMUP_START, ALL_ISPS, "op", source_ip=NEW, now=t)
    mark = warmup_mark(start, t)
    assert (mark.key, mark.warmup_since) == (f"*|{NEW}", 20788)
    for isp, ip in (("gmail", NEW), (ALL_ISPS, None)):
        with pytest.raises(ControlError, match="one source IP at every ISP"):
            make_command(ControlAction.WARMUP_STOP, isp, "op", source_ip=ip, now=t)

    config = Config.model_validate({"pools": [{"name": "default", "source_ips": [WARM, NEW]}]})
    lanes = Lanes(config, KB, partition_map(config, KB), {}, set)
    now = time.time()
    lane = lanes.for_envelope(Envelope(id="m", sender="s@kmta.test", rcpt="u@gmail.com",
                                       domain="gmail.com", isp="gmail", data="x",
                                       accepted_at=now, routed_at=now))
    assert lane.warm_start == {}
    touched = lanes.apply(warmup_mark(start, now), now)
    assert [x for x, _ in touched] == [lane] and set(lane.warm_start) == {NEW}
    assert lane.warm_start[NEW].daily_cap == 200  # gmail's day 1
    stop = make_command(ControlAction.WARMUP_STOP, ALL_ISPS, "op", source_ip=NEW, now=now)
    lanes.apply(warmup_mark(stop, now), now)
    assert lane.warm_start == {} and not lane.warm_capped(NEW, now)


def test_the_panel_lists_a_marked_ip_before_it_sent_and_no_isp_named_star() -> None:
    b = Board()
    b.apply_state(IspState(isp="*", source_ip=NEW, warmup_since=20788, updated_at=1.0))
    assert b.isps() == []
    assert [(r["source_ip"], r["isp"], r["day"]) for r in b.warmup_rows(time.time())] == [
        (NEW, "(every ISP)", "from 2026-12-01")]
    b.apply_state(IspState(isp="*", source_ip=NEW, warmup_since=None, updated_at=2.0))
    assert b.warmup_rows(time.time()) == []


def test_a_warm_ip_keeps_no_attempt_times() -> None:
    now = time.time()
    done = status(begin(int(now // 86400) - 30, now, TINY), TINY)  # past the last day
    lane = lane_with({NEW: done}, [NEW, WARM])
    for i in range(100):
        lane.warm_note(NEW, now + i)
    assert not lane.warm_capped(NEW, now) and not lane.warm_sent.get(NEW)
