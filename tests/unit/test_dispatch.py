"""The delivery loop against a fake transport: each reply becomes its message's outcome and
acts on the lane at once (lock counts, throttles); failed connections end the head message's
attempt and back the lane off; a server closing a used channel costs no attempt."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

import pytest
from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from kmta.config import Config
from kmta.pipeline.metrics import known_isps
from kmta.pipeline.outputs import Out
from kmta.policy.classify import Classifier
from kmta.policy.kb import KnowledgeBase
from schemas import DeliveryEvent, Envelope, IspState, MxHost, Status
from senders.dispatch import Dispatcher
from senders.lane import LOCAL_SLOW, Item, Lane
from senders.records import Records
from senders.transport import Outcome
from tests.fakes import FakeTransport, accepted, refused

KB = KnowledgeBase.load()
CONFIG = Config()
LOW_REP = ("Our system has detected that this message is suspicious due to the very low "
           "reputation of the sending domain")


class Written:
    def __init__(self) -> None:
        self.outs: dict[int, list[Out]] = {}

    def __call__(self, tp: TopicPartition, offset: int, outs: list[Out]) -> None:
        assert offset not in self.outs, "one outcome per message"
        self.outs[offset] = outs

    def events(self) -> dict[int, DeliveryEvent]:
        return {off: DeliveryEvent.model_validate_json(o.value or b"")
                for off, outs in self.outs.items() for o in outs if o.topic == "kmta.results"}


def setup(transport: FakeTransport, n: int, single: bool = False,
          owned: Callable[[], set[int]] | None = None) -> tuple[Dispatcher, Lane, Written]:
    written = Written()
    d = Dispatcher(transport, Classifier.load(), Records(CONFIG, "n1"), written,
                   "kmta.queue", lambda isp: KB.effective(isp).retry, owned=owned)
    lane = Lane("gmail", None, KB.effective("gmail"), [None])
    now = time.time()
    one = {"max_connections": 1} if single else {}
    lane.brain_state(IspState(isp="gmail", speed=60_000, updated_at=now, **one), now)
    lane.refresh()  # fast enough that pacing never waits
    for i in range(n):
        env = Envelope(id=f"m{i}", sender="s@kmta.test", rcpt=f"u{i}@gmail.com",
                       domain="gmail.com", isp="gmail", data="x", accepted_at=now,
                       routed_at=now, mx=[MxHost(host="mx.test", ips=["127.0.0.1"])])
        lane.queue.append(Item(env, 0, i))
    return d, lane, written


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def stop(d: Dispatcher, lane: Lane) -> None:
    """Stop the dispatcher and wait until its connections closed."""
    await d.stop()
    await until(lambda: lane.workers == 0)


async def test_every_message_gets_its_outcome() -> None:
    replies = {"m1": refused(550, "The email account that you tried to reach does not exist",
                             "5.1.1"),
               "m2": refused(451, "try again later", "4.3.0")}
    transport = FakeTransport(reply=lambda env: replies.get(env.id, accepted()))
    d, lane, written = setup(transport, 3)
    known_isps(["gmail"])
    replied = REGISTRY.get_sample_value("kmta_smtp_reply_seconds_count", {"isp": "gmail"}) or 0
    d.kick(lane)
    await until(lambda: len(written.outs) == 3)
    assert REGISTRY.get_sample_value("kmta_smtp_reply_seconds_count",
                                     {"isp": "gmail"}) == replied + 3  # one reply each
    ev = written.events()
    assert ev[0].status is Status.DELIVERED and ev[1].status is Status.BOUNCED
    assert ev[2].status is Status.DEFERRED  # and its envelope in a delay topic:
    assert any(o.topic.startswith("kmta.delay.") for o in written.outs[2])
    assert (d.attempts, d.delivered, lane.attempts, lane.delivered) == (3, 1, 3, 1)
    await stop(d, lane)
    assert d.delivering == 0 and lane.delivering == 0


async def test_a_lock_reply_locks_the_lane_at_its_threshold_before_the_brain_answers() -> None:
    rule = next(r for r in KB.effective("gmail").replies if r.name == "gmail_low_reputation")
    transport = FakeTransport(reply=lambda env: refused(421, LOW_REP, "4.7.0"))
    d, lane, written = setup(transport, rule.threshold + 3)
    d.kick(lane)
    await until(lambda: lane.blocked_until(time.time()) is not None)
    await until(lambda: lane.workers == 0)
    # the connection stops at the lock: the rest wait in the lane
    assert len(written.outs) == rule.threshold
    assert len(lane.queue) == 3
    assert all(e.status is Status.DEFERRED for e in written.events().values())


async def test_a_throttle_reply_slows_the_source_ip_at_once() -> None:
    transport = FakeTransport(reply=lambda env: refused(
        421, "Gmail has detected an unusual rate of unsolicited mail originating from your IP",
        "4.7.28"))
    d, lane, written = setup(transport, 1)
    rate = lane.pacer(None).rate
    d.kick(lane)
    await until(lambda: len(written.outs) == 1)
    assert None in lane.local_slow and lane.pacer(None).rate == pytest.approx(rate * LOCAL_SLOW)
    await stop(d, lane)


async def test_a_failed_connection_ends_the_head_attempt_and_backs_the_lane_off() -> None:
    transport = FakeTransport(refuse_connect=refused(451, "cannot connect", "4.4.1",
                                                     internal=True, stage="connect"))
    d, lane, written = setup(transport, 2, single=True)
    d.kick(lane)
    await until(lambda: len(written.outs) == 1 and lane.workers == 0)
    assert written.events()[0].status is Status.DEFERRED and written.events()[0].internal
    assert lane.connect_failures == 1 and lane.connect_backoff_until > time.time()
    assert len(lane.queue) == 1  # the next message waits for the backoff
    await stop(d, lane)


async def test_a_used_channel_closed_at_mail_costs_no_attempt() -> None:
    sent: list[str] = []

    def reply(env: Envelope) -> Outcome:
        sent.append(env.id)
        if env.id == "m1" and sent.count("m1") == 1:
            return Outcome(refused(421, "closing").reply, False, "mx.test", "mail", True)
        return accepted()

    transport = FakeTransport(reply=reply)
    d, lane, written = setup(transport, 2, single=True)
    d.kick(lane)
    await until(lambda: len(written.outs) == 2)
    assert sent == ["m0", "m1", "m1"] and transport.connects == 2
    assert written.events()[1].status is Status.DELIVERED and written.events()[1].attempt == 1
    await stop(d, lane)


async def test_a_message_of_a_partition_given_away_in_flight_is_not_sent_again() -> None:
    owned = {0}
    sent: list[str] = []

    def reply(env: Envelope) -> Outcome:
        sent.append(env.id)
        if env.id == "m1":
            owned.clear()  # the group moved the partition while m1 was on the wire
            return Outcome(refused(421, "closing").reply, False, "mx.test", "mail", True)
        return accepted()

    transport = FakeTransport(reply=reply)
    d, lane, written = setup(transport, 3, single=True, owned=lambda: owned)
    d.kick(lane)
    await until(lambda: set(written.outs) == {0, 2})
    # m1 went back to no lane (its next owner delivers it), and was never written; m2, still
    # queued here (revoked() drops such), went on a new connection: had m1 gone back to the
    # lane's head it would have been sent before m2
    assert sent == ["m0", "m1", "m2"] and set(written.outs) == {0, 2} and not lane.queue
    await stop(d, lane)


async def test_a_failure_deciding_an_outcome_still_gives_the_message_one() -> None:
    transport = FakeTransport()
    d, lane, written = setup(transport, 1)

    def broken(*args: object, **kw: object) -> list[Out]:
        raise RuntimeError("boom")

    d.records.result = broken  # type: ignore[method-assign]
    d.kick(lane)
    await until(lambda: len(written.outs) == 1)
    ev = written.events()[0]
    assert ev.status is Status.DEFERRED and ev.category == "internal_error"
    assert "boom" in ev.response and d.errors == 1
    await stop(d, lane)


# -- the next message behind the current one's end of data (pipelined DATA, RFC 2920) ---------
def pipelined(n: int, reply: Callable[[Envelope], Outcome] | None = None,
              ) -> tuple[FakeTransport, Dispatcher, Lane, Written]:
    transport = FakeTransport(pipelining=True)
    if reply is not None:
        transport.reply = reply
    d, lane, written = setup(transport, n, single=True)
    now = time.time()  # a pacer that has the next slot free by the time the body goes
    lane.brain_state(IspState(isp="gmail", speed=1e9 * lane.rule.sending.tact,
                              max_connections=1, updated_at=now), now)
    lane.refresh()
    return transport, d, lane, written


async def test_each_message_takes_the_next_one_behind_it_on_one_connection() -> None:
    transport, d, lane, written = pipelined(5)
    d.kick(lane)
    await until(lambda: len(written.outs) == 5)
    assert transport.rode == [("m0", "m1"), ("m1", "m2"), ("m2", "m3"), ("m3", "m4")]
    assert [s for s, _ in transport.sent] == ["m0", "m1", "m2", "m3", "m4"]
    assert transport.connects == 1 and (d.attempts, d.delivered) == (5, 5)
    assert all(e.status is Status.DELIVERED and e.attempt == 1
               for e in written.events().values())
    await stop(d, lane)
    assert d.delivering == 0 and lane.delivering == 0


async def test_a_message_written_ahead_is_dropped_before_its_body_when_a_lock_came() -> None:
    rule = next(r for r in KB.effective("gmail").replies if r.name == "retrying_will_not_succeed")
    assert rule.action == "lock" and rule.threshold == 1

    def reply(env: Envelope) -> Outcome:
        if env.id == "m0":  # at the dot, the lane's next message's commands behind it
            return refused(421, "4.7.0 Retrying will NOT succeed", "4.7.0", stage="data")
        return accepted()

    transport, d, lane, written = pipelined(3, reply)
    d.kick(lane)
    await until(lambda: lane.blocked_until(time.time()) is not None and lane.workers == 0)
    # m1 rode behind m0's dot, but the lock came with m0's reply: it never had its body sent,
    # costs no attempt and waits in the lane with m2
    assert transport.rode == [("m0", "m1")] and [s for s, _ in transport.sent] == ["m0"]
    assert set(written.outs) == {0} and d.attempts == 1
    assert [i.env.id for i in lane.queue] == ["m1", "m2"] and d.delivering == 0


async def test_nothing_rides_past_messages_per_connection() -> None:
    transport, d, lane, written = pipelined(5)
    lane.rule = dataclasses.replace(lane.rule, sending=lane.rule.sending.model_copy(
        update={"messages_per_connection": 2}))
    d.kick(lane)
    await until(lambda: len(written.outs) == 5)
    assert transport.rode == [("m0", "m1"), ("m2", "m3")]
    assert transport.connects == 3
    await stop(d, lane)


async def test_only_a_message_pacing_has_released_rides() -> None:
    transport, d, lane, written = pipelined(3)
    now = time.time()
    tact = lane.rule.sending.tact
    lane.brain_state(IspState(isp="gmail", speed=5 * tact, max_connections=1, updated_at=now),
                     now)  # 5 msg/s: the next slot is 0.2 s after the last
    lane.refresh()
    d.kick(lane)
    await until(lambda: len(written.outs) == 3)
    assert transport.rode == [] and transport.connects == 1
    await stop(d, lane)


@pytest.mark.parametrize("where", ["dot", "mail"])
async def test_a_421_ends_the_session_without_losing_or_double_counting_the_next(
        where: str) -> None:
    """421 to m0's end of data: m1, written behind it, had no reply of its own: back to the
    lane, not attempted. 421 to m1's MAIL ("idle too long" said before it hung up): no
    attempt on a used channel, as before. Each message gets one outcome (``Written``)."""
    seen: list[str] = []

    def reply(env: Envelope) -> Outcome:
        seen.append(env.id)
        if seen.count(env.id) == 1 and (env.id, where) in (("m0", "dot"), ("m1", "mail")):
            return Outcome(refused(421, "4.7.0 closing").reply, False, "mx.test",
                           "data" if where == "dot" else "mail", True)
        return accepted()

    transport, d, lane, written = pipelined(3, reply)
    d.kick(lane)
    await until(lambda: len(written.outs) == 3)
    ev = written.events()
    assert ("m0", "m1") in transport.rode and transport.connects == 2
    if where == "dot":
        assert ev[0].status is Status.DEFERRED and ev[0].attempt == 1
        assert seen == ["m0", "m1", "m2"]  # m1 came back without a reply of its own
    else:
        assert ev[0].status is Status.DELIVERED
        assert seen == ["m0", "m1", "m1", "m2"]
    assert ev[1].status is Status.DELIVERED and ev[1].attempt == 1
    assert ev[2].status is Status.DELIVERED and ev[2].attempt == 1
    assert d.attempts == 3 and lane.attempts == 3
    await stop(d, lane)
    assert d.delivering == 0 and lane.delivering == 0 and not lane.queue
