"""A lane's may-send answer is computed once per change (senders/lane.py ``_Gate``), not per
message: every change of a lock, a pause, a state, the rule or the slots must reach the next
message at once, and a lock's end with the clock, exactly as the uncached checks answer."""

from __future__ import annotations

import dataclasses
import random
import time

from kmta.policy.kb import KnowledgeBase
from schemas import IspState
from schemas.rules import ReplyRule
from senders.lane import Lane

KB = KnowledgeBase.load()
A, B = "127.0.0.2", "127.0.0.3"


def lane_now() -> tuple[Lane, float]:
    now = time.time()
    lane = Lane("gmail", "p", KB.effective("gmail"), [A, B], pool_name="p")
    lane.brain_state(IspState(isp="gmail", speed=60.0, updated_at=now), now)
    lane.refresh()
    return lane, now


def fresh(lane: Lane, ip: str | None, now: float) -> bool:
    """The uncached answer (what the dispatcher checked per message before)."""
    return (lane._blocked(now, whole_only=False) is None and not lane._ip_blocked(ip, now)
            and lane.conns.get(ip, 0) <= lane._max_connections_per_ip())


def test_a_pause_after_a_cached_answer_stops_the_next_message() -> None:
    lane, now = lane_now()
    assert lane.may_send(A, now) and lane.blocked_until(now) is None  # cached from here
    lane.brain_state(IspState(isp="gmail", paused=True, updated_at=now), now)
    assert not lane.may_send(A, now) and not lane.may_send(B, now)
    assert lane.blocked_until(now) == float("inf")
    lane.brain_state(IspState(isp="gmail", paused=False, updated_at=now), now)
    assert lane.may_send(A, now) and lane.blocked_until(now) is None


def test_an_ip_lock_stops_that_ip_only_and_ends_with_the_clock() -> None:
    lane, now = lane_now()
    rate = lane.rate_per_second()
    assert lane.may_send(A, now)
    lane.brain_state(IspState(isp="gmail", source_ip=A, locked_until=now + 60, updated_at=now),
                     now)
    assert lane.ip_blocked(A, now) and not lane.may_send(A, now)
    assert lane.may_send(B, now) and lane.blocked_until(now) is None
    assert lane.rate_per_second() == rate / 2  # only B's
    assert lane.pick_ip(now) is not None and lane.pick_ip(now).ip == B  # type: ignore[union-attr]
    # no change but the clock: the lock's end opens A again
    assert not lane.may_send(A, now + 59.9)
    assert lane.may_send(A, now + 60.0)


def test_a_local_lock_invalidates_the_cached_answer() -> None:
    lane, now = lane_now()
    assert lane.may_send(A, now)
    rule = ReplyRule(name="block", match="550", action="lock", duration=30.0, scope="pool")
    assert lane.note_lock_reply(rule, A, now)
    assert not lane.may_send(A, now) and not lane.may_send(B, now)
    assert lane.blocked_until(now) == now + 30.0
    assert lane.may_send(A, now + 30.0)


def test_a_state_object_or_rule_put_in_place_directly_is_seen() -> None:
    lane, now = lane_now()
    assert lane.may_send(A, now)
    lane.pool_state = IspState(isp="gmail", pool="p", paused=True)
    assert not lane.may_send(A, now)
    lane.pool_state = None
    assert lane.may_send(A, now)
    lane.conns[A] = 2
    lane.rule = dataclasses.replace(lane.rule, sending=lane.rule.sending.model_copy(
        update={"max_connections": 1}))
    assert lane.max_connections_per_ip() == 1 and not lane.may_send(A, now)
    lane.conns[A] = 1  # connections are counted live, not cached
    assert lane.may_send(A, now)


def test_new_slots_reach_the_cap_and_the_rate() -> None:
    lane, _ = lane_now()
    cap, rate = lane.max_connections_per_ip(), lane.rate_per_second()
    lane.slots = {0: (0, 2)}  # half the ISP's partitions (lanes.py refreshes after it)
    lane.refresh()
    assert lane.rate_per_second() == rate / 2
    assert lane.max_connections_per_ip() == (cap + 1) // 2


def test_the_cached_answer_is_the_uncached_one_through_random_changes() -> None:
    rng = random.Random(7)
    lane, t0 = lane_now()
    for step in range(400):
        now = t0 + step * 0.5
        kind = rng.randrange(5)
        until = now + rng.choice((-1.0, 0.5, 2.0, 10.0))
        if kind == 0:
            lane.brain_state(IspState(isp="gmail", paused=rng.random() < 0.2,
                                      locked_until=until if rng.random() < 0.3 else None,
                                      speed=rng.choice((30.0, 60.0)), updated_at=now), now)
        elif kind == 1:
            lane.brain_state(IspState(isp="gmail", source_ip=rng.choice((A, B)),
                                      paused=rng.random() < 0.2,
                                      locked_until=until if rng.random() < 0.5 else None,
                                      updated_at=now), now)
        elif kind == 2:
            lane.brain_state(IspState(isp="gmail", pool="p", paused=rng.random() < 0.2,
                                      locked_until=until if rng.random() < 0.3 else None,
                                      updated_at=now), now)
        elif kind == 3:
            rule = ReplyRule(name="r", match="5", action="lock", duration=rng.choice((1.0, 5.0)),
                             scope=rng.choice(("isp", "source_ip", "pool")))
            lane.note_lock_reply(rule, rng.choice((A, B)), now)
        else:
            lane.conns[rng.choice((A, B))] = rng.randrange(4)
        for later in (now, now + 0.3, now + 1.0, now + 3.0):
            for ip in (A, B):
                assert lane.may_send(ip, later) == fresh(lane, ip, later), (step, ip, later)
                assert lane.ip_blocked(ip, later) == lane._ip_blocked(ip, later)
            assert lane.blocked_until(later) == lane._blocked(later, whole_only=False)
