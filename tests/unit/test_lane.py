"""A sender lane's own quick reactions, ahead of the brain: a throttle reply slows the replying
source IP at once, until the brain's lower speed arrives (for a deep bucket's in-flight
refusals: until that speed is under the local rate)."""

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


def test_a_deep_buckets_in_flight_throttles_keep_the_local_slow_down_past_the_first_cut() -> None:
    # a deep bucket's knee: the messages in flight come back refused too, and the brain's
    # first cut (766 -> 500, the knee's) is still far above the capacity; the node stays
    # slowed until the brain's speed is under its own local rate (76.6), here at 32
    lane = lane_at(766.0)
    tact = lane.rule.sending.tact
    now = time.time()
    assert lane.note_throttle(A, now)
    assert not lane.note_throttle(A, now + 0.01)
    assert not lane.note_throttle(A, now + 0.02)  # three: more than DEEP_ROUND (2)
    trace = []
    for speed in (500.0, 200.0, 80.0, 32.0):
        lane.brain_state(IspState(isp="yahoo", speed=speed, updated_at=now), now)
        lane.refresh()
        trace.append((A in lane.local_slow, round(lane.pacer(A).rate * tact, 1)))
    assert trace == [(True, 50.0), (True, 20.0), (True, 8.0), (False, 32.0)]
    assert lane.pacer(B).rate * tact == pytest.approx(32.0)  # B was never throttled


def test_a_kept_local_slow_down_ends_with_its_grace_at_the_brains_speed() -> None:
    lane = lane_at(766.0)
    tact = lane.rule.sending.tact
    for i in range(3):
        lane.note_throttle(A, time.time() - LOCAL_SLOW_GRACE + 0.5 + 0.01 * i)
    lane.brain_state(IspState(isp="yahoo", speed=500.0, updated_at=time.time()), time.time())
    lane.refresh()
    assert lane.pacer(A).rate * tact == pytest.approx(500.0 * LOCAL_SLOW)
    _, speed, throttles = lane.local_slow[A]
    lane.local_slow[A] = (time.time() - LOCAL_SLOW_GRACE - 0.1, speed, throttles)
    lane.refresh()
    assert lane.local_slow == {} and lane.pacer(A).rate * tact == pytest.approx(500.0)


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
