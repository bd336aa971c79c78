"""The checkpoint writes outcomes and the queue offsets they complete in one transaction; a
cancelled transaction puts its outcomes back; partitions given away are never committed."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.structs import OffsetAndMetadata

from kmta.pipeline.outputs import Out
from senders.checkpoint import Checkpoint
from senders.tracker import encode_done
from tests.fakes import FakeConsumer, FakeProducer

TP = TopicPartition("kmta.queue", 0)
TP1 = TopicPartition("kmta.queue", 1)


def checkpoint(*tps: TopicPartition) -> tuple[Checkpoint, FakeProducer, FakeConsumer]:
    consumer = FakeConsumer(set(tps))
    producer = FakeProducer()
    cp = Checkpoint("g", consumer.assignment, producer)
    for tp in tps:
        cp.adopt(tp, None)
    return cp, producer, consumer


def out(n: int) -> list[Out]:
    return [Out("kmta.results", f"r{n}".encode())]


async def test_outcomes_and_the_offsets_they_complete_go_in_one_transaction() -> None:
    cp, producer, _ = checkpoint(TP)
    for off in (0, 1, 2):
        assert not cp.track(TP, off)
    cp.write(TP, 0, out(0))
    cp.write(TP, 2, out(2))  # out of order: 1 still open
    assert cp.unwritten == 2
    await cp.flush()
    assert cp.unwritten == 0
    records, offsets = producer.committed[-1]
    assert records == [("kmta.results", b"r0"), ("kmta.results", b"r2")]
    assert offsets == {TP: OffsetAndMetadata(1, encode_done(1, {2}))}
    cp.write(TP, 1, out(1))
    await cp.flush()
    assert producer.committed[-1][1] == {TP: OffsetAndMetadata(3, "")}
    await cp.flush()  # nothing moved: no empty transaction
    assert len(producer.committed) == 2


async def test_a_first_offset_still_open_commits_what_finished_past_it() -> None:
    """A partition never committed whose first message is slow: the ones after it finish and
    their outcomes are written; their offsets go with a commit at that first offset, or the
    partition's next owner (a rebalance, a crash) would deliver them all again."""
    cp, producer, _ = checkpoint(TP)
    for off in (5, 6, 7):  # the log starts at 5 (older records deleted)
        assert not cp.track(TP, off)
    cp.write(TP, 6, out(6))
    cp.write(TP, 7, out(7))
    await cp.flush()
    assert producer.committed[-1][1] == {TP: OffsetAndMetadata(5, encode_done(5, {6, 7}))}
    # the next owner skips them
    nxt, _, _ = checkpoint()
    nxt.adopt(TP, producer.committed[-1][1][TP])
    assert [nxt.track(TP, off) for off in (5, 6, 7)] == [False, True, True]


async def test_a_partition_given_away_is_not_committed() -> None:
    cp, producer, consumer = checkpoint(TP, TP1)
    cp.track(TP, 0)
    cp.track(TP1, 0)
    cp.write(TP, 0, out(0))
    cp.write(TP1, 0, out(1))
    consumer.assigned.discard(TP1)
    await cp.flush()
    assert set(producer.committed[-1][1]) == {TP}


async def test_an_aborted_transaction_is_written_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("senders.checkpoint.RETRY_AFTER", 0.0)
    cp, producer, _ = checkpoint(TP)
    producer.fail = [KafkaError("broker went away")]
    cp.track(TP, 0)
    cp.write(TP, 0, out(0))
    await cp.flush()
    assert len(producer.committed) == 1
    assert producer.committed[0] == ([("kmta.results", b"r0")], {TP: OffsetAndMetadata(1, "")})


async def test_a_cancelled_transaction_puts_its_outcomes_back_for_the_next() -> None:
    cp, producer, _ = checkpoint(TP)
    producer.block = asyncio.Event()
    cp.track(TP, 0)
    cp.write(TP, 0, out(0))
    task = asyncio.create_task(cp.flush())
    await asyncio.sleep(0)
    assert cp.unwritten == 1  # being written still counts
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not producer.committed and cp.unwritten == 1
    producer.block = None
    await cp.flush()  # the stop's last transaction: the outcome goes with its offset
    assert producer.committed == [([("kmta.results", b"r0")], {TP: OffsetAndMetadata(1, "")})]


async def test_fenced_stops_the_node() -> None:
    fenced: list[bool] = []
    consumer = FakeConsumer({TP})
    producer = FakeProducer(fail=[ProducerFenced()])
    cp = Checkpoint("g", consumer.assignment, producer, on_fenced=lambda: fenced.append(True))
    cp.adopt(TP, None)
    cp.track(TP, 0)
    cp.write(TP, 0, out(0))
    task = asyncio.create_task(cp.run(linger=0))
    for _ in range(100):
        if fenced:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    assert fenced == [True]


def test_a_takeover_skips_what_the_previous_owner_committed_past_its_point() -> None:
    cp, _, _ = checkpoint()
    cp.adopt(TP, OffsetAndMetadata(10, encode_done(10, {11, 12})))
    assert [cp.track(TP, off) for off in (10, 11, 12, 13)] == [False, True, True, False]
    assert cp.owned() == {0}
    cp.release(TP)
    assert cp.owned() == set()


def test_an_outcome_that_comes_after_its_partition_was_revoked_is_dropped() -> None:
    # a delivery outlived the revoke's grace: the partition was committed without it and
    # given up, and the next owner reads and delivers it again: one outcome, the next owner's
    cp, _, _ = checkpoint(TP)
    cp.track(TP, 7)
    cp.release(TP)
    cp.write(TP, 7, out(7))
    assert cp.pending == [] and cp.late == 1


def test_an_offset_taken_again_by_the_same_node_gets_one_outcome() -> None:
    cp, _, _ = checkpoint(TP)
    cp.track(TP, 7)
    cp.release(TP)  # the rebalance gave the partition back to this node
    cp.adopt(TP, OffsetAndMetadata(7, ""))
    assert not cp.track(TP, 7)  # read again, to be delivered again
    cp.write(TP, 7, out(7))  # the first delivery's late outcome: the one written
    cp.write(TP, 7, out(70))  # the second delivery's
    cp.write(TP, 8, out(8))  # never read by this tracker
    assert cp.pending == [(TP, 7, out(7))] and cp.late == 2
