"""A sender lane's own quick reactions, ahead of the brain: a throttle reply slows the replying
source IP at once, until the brain's lower speed arrives."""

from __future__ import annotations

import time

import pytest

from kmta.policy.kb import KnowledgeBase
from schemas import IspState
from senders.lane import LOCAL_SLOW, LOCAL_SLOW_GRACE, Lane

KB = KnowledgeBase.load()
A, B = "127.0.0.2", "127.0.0.3"


def lane_at(speed: float) -> Lane:
    lane = Lane("yahoo", None, KB.effective("yahoo"), [A, B])
    lane.brain_state(IspState(isp="yahoo", speed=speed, updated_at=time.time()), time.time())
    lane.refresh()
    return lane


def test_a_throttle_slows_only_the_replying_ip_and_only_once() -> None:
    lane = lane_at(60.0)
    full = lane.ip_rate()
    assert full == pytest.approx(60.0 / lane.rule.sending.tact)
    now = time.time()
    assert lane.note_throttle(A, now)
    assert lane.pacer(A).rate == pytest.approx(full * LOCAL_SLOW)
    assert lane.pacer(B).rate == pytest.approx(full)
    # the throttles that follow were sent at the old speed: no second halving
    assert not lane.note_throttle(A, now + 0.1)
    assert lane.pacer(A).rate == pytest.approx(full * LOCAL_SLOW)


def test_the_brains_decrease_replaces_the_local_slow_down() -> None:
    lane = lane_at(60.0)
    lane.note_throttle(A, time.time())
    # a state without a decrease (e.g. another field changed) keeps the local slow-down
    lane.brain_state(IspState(isp="yahoo", speed=60.0, updated_at=time.time()), time.time())
    lane.refresh()
    assert A in lane.local_slow
    lane.brain_state(IspState(isp="yahoo", speed=42.0, updated_at=time.time()), time.time())
    lane.refresh()
    assert lane.local_slow == {}
    assert lane.pacer(A).rate == pytest.approx(42.0 / lane.rule.sending.tact)


def test_the_local_slow_down_ends_by_itself() -> None:
    lane = lane_at(60.0)
    lane.note_throttle(A, time.time() - LOCAL_SLOW_GRACE - 0.1)  # the brain never answered
    lane.refresh()
    assert lane.local_slow == {} and lane.pacer(A).rate == pytest.approx(lane.ip_rate())


def test_each_source_ip_paces_at_its_own_level_else_the_isps() -> None:
    lane = lane_at(60.0)  # the ISP's record: the lowest level, for IPs without their own
    tact = lane.rule.sending.tact
    lane.brain_state(IspState(isp="yahoo", source_ip=A, speed=120.0, updated_at=time.time()),
                     time.time())
    lane.refresh()
    assert lane.pacer(A).rate == pytest.approx(120.0 / tact)
    assert lane.pacer(B).rate == pytest.approx(60.0 / tact)
    assert lane.rate_per_second() == pytest.approx(180.0 / tact)
    # a record of A without a level (e.g. only a lock scope) leaves A on the ISP's speed
    lane.brain_state(IspState(isp="yahoo", source_ip=A, updated_at=time.time()), time.time())
    lane.refresh()
    assert lane.pacer(A).rate == pytest.approx(60.0 / tact)


def test_an_ips_own_decrease_replaces_its_local_slow_down_only() -> None:
    lane = lane_at(60.0)
    now = time.time()
    for ip in (A, B):
        lane.brain_state(IspState(isp="yahoo", source_ip=ip, speed=60.0, updated_at=now), now)
    lane.note_throttle(A, now)
    lane.note_throttle(B, now)
    lane.brain_state(IspState(isp="yahoo", source_ip=A, speed=30.0, updated_at=now), now)
    # the ISP's record falls too (the lowest level): B has a level of its own, still at 60
    lane.brain_state(IspState(isp="yahoo", speed=30.0, updated_at=now), now)
    lane.refresh()
    assert set(lane.local_slow) == {B}
    tact = lane.rule.sending.tact
    assert lane.pacer(A).rate == pytest.approx(30.0 / tact)
    assert lane.pacer(B).rate == pytest.approx(60.0 / tact * LOCAL_SLOW)
