"""Taking queue records: a record finished by the partition's previous owner is skipped, an
undecodable one dead-lettered, a cleared or expired one ended, a blocked ISP's parked when its
partition must keep flowing, else held; flow control pauses and resumes partitions."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from kmta.config import Config
from kmta.pipeline.rules import partition_map
from kmta.policy.kb import KnowledgeBase
from schemas import DeadLetter, DeliveryEvent, Envelope, IspState, Status, envelope_codec
from senders.checkpoint import Checkpoint
from senders.intake import Intake
from senders.lane import Lane
from senders.lanes import Lanes
from senders.records import Records
from senders.tracker import encode_done
from tests.fakes import FakeConsumer, FakeProducer

KB = KnowledgeBase.load()


@dataclass
class Rec:
    offset: int
    value: bytes | None


class Rooms:
    def __init__(self, **sender: int) -> None:
        self.config = Config.model_validate({"sender": sender} if sender else {})
        self.pmap = partition_map(self.config, KB)
        self.states: dict[str, object] = {}
        self.consumer = FakeConsumer()
        self.checkpoint = Checkpoint("g", self.consumer.assignment, FakeProducer())
        self.lanes = Lanes(self.config, KB, self.pmap, self.states, self.checkpoint.owned)
        self.kicked: list[Lane] = []
        self.busy = 0  # messages a test holds "in flight"
        self.intake = Intake(self.config, self.pmap, self.lanes, self.checkpoint,
                             Records(self.config, "n1"), self.kicked.append,
                             lambda: self.busy, self.consumer)

    def tp(self, isp: str) -> TopicPartition:
        tp = TopicPartition("kmta.queue", self.pmap.partitions_of(isp)[0])
        self.consumer.assigned.add(tp)
        self.checkpoint.adopt(tp, None)
        self.lanes.reslot()
        return tp

    def outs(self) -> list[tuple[int, str, bytes | None]]:
        return [(off, o.topic, o.value) for _, off, outs in self.checkpoint.pending
                for o in outs]


def envelope(isp: str, i: int, **kw: object) -> Envelope:
    now = time.time()
    return Envelope(id=f"{isp}-{i}", sender="s@kmta.test", rcpt=f"u{i}@x.test",
                    domain="x.test", isp=isp, data=b"x", accepted_at=now, routed_at=now, **kw)


def env(isp: str, i: int, **kw: object) -> bytes:
    """The queue record, as the router writes it."""
    return envelope_codec.encode(envelope(isp, i, **kw))


def test_a_record_is_held_by_its_lane_and_the_lane_kicked() -> None:
    r = Rooms()
    tp = r.tp("gmail")
    r.intake.accept_or_dead_letter(tp, Rec(0, env("gmail", 0)))
    lane = r.lanes.by_key[("gmail", None)]
    assert [i.offset for i in lane.queue] == [0] and r.kicked == [lane]
    assert r.checkpoint.pending == []


def test_what_the_previous_owner_finished_is_skipped() -> None:
    r = Rooms()
    tp = TopicPartition("kmta.queue", 3)
    r.checkpoint.adopt(tp, OffsetAndMetadata(5, encode_done(5, {6})))
    r.intake.accept(tp, Rec(6, env("gmail", 0)))
    assert r.intake.skipped == 1 and not r.lanes.by_key


def test_an_undecodable_record_is_dead_lettered_with_its_bytes() -> None:
    r = Rooms()
    tp = r.tp("gmail")
    r.intake.accept_or_dead_letter(tp, Rec(7, b"{not json"))
    [(off, topic, value)] = r.outs()
    dl = DeadLetter.model_validate_json(value or b"")
    assert (off, topic, dl.offset, dl.original) == (7, "kmta.dlq", 7, "{not json")


def test_a_record_of_the_old_json_form_is_taken_as_one_of_the_binary_form() -> None:
    r = Rooms()
    tp = r.tp("gmail")
    old, new = envelope("gmail", 0), envelope("gmail", 1)
    r.intake.accept_or_dead_letter(tp, Rec(0, old.to_json()))  # written before an upgrade
    r.intake.accept_or_dead_letter(tp, Rec(1, envelope_codec.encode(new)))
    assert [i.env for i in r.lanes.by_key[("gmail", None)].queue] == [old, new]
    assert r.checkpoint.pending == []


def test_a_dead_letter_of_a_binary_record_shows_the_envelope_with_its_body_as_text() -> None:
    r = Rooms()
    tp = r.tp("gmail")
    e = envelope("gmail", 0).model_copy(update={"data": "Subject: Grüße\r\n\r\nx\r\n".encode()})
    r.intake.lanes.for_envelope = None  # type: ignore[assignment,method-assign]
    r.intake.accept_or_dead_letter(tp, Rec(3, envelope_codec.encode(e)))  # fails inside
    [(off, topic, value)] = r.outs()
    dl = DeadLetter.model_validate_json(value or b"")
    assert (off, topic, dl.original_encoding) == (3, "kmta.dlq", "utf-8")
    assert "internal error taking the message" in dl.reason
    assert envelope_codec.decode(dl.original.encode()) == e  # readable, and writable back


def test_cleared_and_expired_records_end_at_once() -> None:
    r = Rooms()
    tp = r.tp("gmail")
    r.states["gmail"] = IspState(isp="gmail", clear_before=time.time() + 60)
    r.intake.accept(tp, Rec(0, env("gmail", 0)))
    del r.states["gmail"]
    r.intake.accept(tp, Rec(1, env("yahoo", 1, expires_at=time.time() - 1)))
    events = [DeliveryEvent.model_validate_json(v or b"") for _, _, v in r.outs()]
    assert [(e.status, e.code, e.category) for e in events] == [
        (Status.CANCELLED, 554, "cancelled"), (Status.EXPIRED, 554, "expired")]


def test_a_held_campaign_waits_in_the_delay_topics_from_arrival_and_from_the_lane() -> None:
    """A hold the brain placed after routing (the message was queued already) stops it at the
    sender too: on arrival, and in the lane's queue when the hold comes later."""
    r = Rooms()
    tp = r.tp("gmail")
    r.intake.accept(tp, Rec(0, env("gmail", 0, campaign="spring")))
    r.intake.accept(tp, Rec(1, env("gmail", 1, campaign="autumn")))
    lane = r.lanes.by_key[("gmail", None)]
    assert [i.offset for i in lane.queue] == [0, 1]
    held = IspState(isp="gmail", holds={"campaign:spring": "complaint rate 1.00% over 0.30%"})
    r.lanes.apply(held)
    now = time.time()
    r.intake.park_holds(lane, now)
    assert [i.offset for i in lane.queue] == [1]  # another campaign goes on
    r.intake.accept(tp, Rec(2, env("gmail", 2, campaign="spring")))
    assert [i.offset for i in lane.queue] == [1]
    outs = r.outs()
    assert [(off, topic.startswith("kmta.delay.")) for off, topic, _ in outs] == [
        (0, True), (0, False), (2, True), (2, False)]
    parked = envelope_codec.decode(outs[0][2] or b"")
    assert parked.attempt == 0 and parked.due_at is not None
    assert now + r.config.reputation.recheck - 1 <= parked.due_at
    ev = DeliveryEvent.model_validate_json(outs[1][2] or b"")
    assert (ev.status, ev.category, ev.code, ev.final) == (
        Status.DEFERRED, "reputation_hold", None, False)
    assert ev.response == "campaign:spring held at gmail: complaint rate 1.00% over 0.30%"
    assert ev.node == "n1"


def test_a_blocked_isp_on_a_shared_partition_is_parked_until_its_lock_ends() -> None:
    r = Rooms()
    tp = r.tp("example.org")  # an unknown ISP: a shared partition
    until = time.time() + 600
    r.states["example.org"] = IspState(isp="example.org", locked_until=until)
    r.intake.accept(tp, Rec(0, env("example.org", 0)))
    [(_, topic, value)] = r.outs()
    assert topic.startswith("kmta.delay.")
    assert envelope_codec.decode(value or b"").due_at == until


def test_a_blocked_isp_on_its_own_partition_is_held_and_the_partition_paused() -> None:
    r = Rooms()
    tp = r.tp("gmail")
    r.states["gmail"] = IspState(isp="gmail", locked_until=time.time() + 600)
    r.intake.accept(tp, Rec(0, env("gmail", 0)))
    assert len(r.lanes.by_key[("gmail", None)].queue) == 1 and r.outs() == []
    assert r.consumer.paused() == {tp}
    r.intake.flow_control()
    assert r.consumer.paused() == {tp}  # still locked
    r.lanes.apply(IspState(isp="gmail", locked_until=None, updated_at=time.time()))
    r.intake.flow_control()
    assert r.consumer.paused() == set()


def test_a_node_holding_max_in_flight_pauses_every_partition() -> None:
    r = Rooms(max_in_flight=2, isp_backlog=10)
    tps = [r.tp("gmail"), r.tp("yahoo")]
    for i, tp in enumerate(tps):
        r.intake.accept(tp, Rec(i, env("gmail" if i == 0 else "yahoo", i)))
    r.intake.flow_control()
    assert r.consumer.paused() == set(tps)
    for lane in r.lanes:
        lane.keep([])
    r.intake.flow_control()
    assert r.consumer.paused() == set()


async def test_a_revoked_partition_drops_what_was_not_started_and_commits() -> None:
    r = Rooms()
    tp = r.tp("gmail")
    r.intake.accept(tp, Rec(0, env("gmail", 0)))
    r.intake.accept(tp, Rec(1, b"junk"))  # dead-lettered: its offset is done
    await r.intake.revoked([tp])
    assert not r.lanes.by_key[("gmail", None)].queue
    assert r.checkpoint.owned() == set()


async def test_a_message_put_back_in_its_lane_while_its_partition_is_revoked_is_dropped() -> None:
    r = Rooms()
    tp = r.tp("gmail")
    r.intake.accept(tp, Rec(0, env("gmail", 0)))
    lane = r.lanes.by_key[("gmail", None)]
    item = lane.queue.popleft()  # on a connection
    r.busy = 1
    revoking = asyncio.create_task(r.intake.revoked([tp]))
    await asyncio.sleep(0.05)  # revoked() waits for it within its grace
    lane.queue.appendleft(item)  # its connection ended before its reply: back to the lane
    r.busy = 0
    await revoking
    assert not lane.queue, "the next owner delivers it; sending it here would be a second copy"
