"""The brain's consumer drops the results records of ``queued`` events by their header before
faust makes events of them (streams/committed.py), and faust's commit still passes over them;
the router's records carry that header, an outcome's never (kmta/pipeline/outputs.py)."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import faust
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import TopicPartition

from kmta.config import Config
from kmta.pipeline.outputs import QUEUED_HEADER, Out, event_out, send_each, write
from schemas import DeliveryEvent, Status
from streams import committed
from streams.app import app_options, faust_credentials

TP = TopicPartition("u.results", 3)
OTHER = TopicPartition("u.results", 4)


def rec(offset: int, queued: bool, tp: TopicPartition = TP) -> SimpleNamespace:
    """What aiokafka's fetch hands faust: a ConsumerRecord's offset and headers."""
    return SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=offset,
                           headers=[QUEUED_HEADER] if queued else [])


def event(status: Status) -> DeliveryEvent:
    return DeliveryEvent(id="m-1", to="ann@gmail.com", isp="gmail", status=status,
                         final=status is Status.DELIVERED, timestamp=1.0)


def test_event_out_marks_queued_events_only() -> None:
    config = Config()
    assert event_out(config, event(Status.QUEUED)).headers == (QUEUED_HEADER,)
    for status in Status:
        if status is not Status.QUEUED:
            assert event_out(config, event(status)).headers is None, status


class Producer:
    """aiokafka's ``send`` as far as headers go: each record goes through aiokafka's record
    builder (which refuses headers that are not a list)."""

    def __init__(self) -> None:
        self.sent: list[tuple] = []

    async def send(self, topic, value=None, key=None, partition=None, timestamp_ms=None,
                   headers=None):
        builder = DefaultRecordBatchBuilder(
            magic=2, compression_type=0, is_transactional=0, producer_id=-1,
            producer_epoch=-1, base_sequence=-1, batch_size=16384)
        builder.append(0, timestamp=None, key=key, value=value, headers=headers or [])
        self.sent.append((topic, value, key, partition, headers))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


async def test_headers_reach_the_producer() -> None:
    p = Producer()
    marked = Out("u.results", b"{}", b"gmail", headers=(QUEUED_HEADER,))
    plain = Out("u.queue", b"x", b"gmail", 2)
    await send_each(p, [[marked, plain]])
    await write(p, [marked])
    assert [s[4] for s in p.sent] == [[QUEUED_HEADER], None, [QUEUED_HEADER]]


def test_skipped_by_header_only() -> None:
    assert committed.skipped(rec(1, True))
    assert not committed.skipped(rec(1, False))
    assert not committed.skipped(SimpleNamespace(headers=None))
    assert not committed.skipped(SimpleNamespace(headers=[("kmta-status", b"delivered")]))


def test_runs() -> None:
    assert list(committed.runs([])) == []
    assert list(committed.runs([4])) == [(4, 4)]
    assert list(committed.runs([1, 2, 3, 7, 9, 10])) == [(1, 3), (7, 7), (9, 10)]


def commit(consumer) -> int | None:
    """The offset faust's ``Consumer.commit`` would commit for TP now (and remembers it)."""
    offset = consumer._new_offset(TP)
    if offset is not None:
        consumer._committed_offset[TP] = offset
    return offset


def _consumer(tmp_path):
    config = Config()
    app = faust.App("u.brain", broker_credentials=faust_credentials(config),
                    **app_options(config, str(tmp_path)))
    committed.install(app)
    return app, app.consumer


async def test_getmany_drops_queued_records_and_commit_passes_over_them(tmp_path) -> None:
    _app, consumer = _consumer(tmp_path)
    try:
        fetched = {TP: [rec(10, True), rec(11, False), rec(12, True), rec(13, True),
                        rec(14, False), rec(15, True)],
                   OTHER: [rec(0, True, OTHER), rec(1, True, OTHER)]}

        async def getmany(active_partitions, timeout):
            return fetched
        consumer._thread.getmany = getmany
        records = await consumer._getmany(None, 1.0)
        assert {tp: [r.offset for r in rs] for tp, rs in records.items()} == {TP: [11, 14]}
        # the commits: what faust's ack bookkeeping makes of it (10 committed: next to read)
        consumer._committed_offset[TP] = 10
        consumer._acked[TP].extend([11])
        assert commit(consumer) == 12  # past 10; 12, 13 (skipped) wait for an ack after them
        assert commit(consumer) is None
        consumer._acked[TP].extend([14])
        assert commit(consumer) == 15  # past 12-13; 15 waits for the next ack
        consumer._acked[TP].extend([16])
        assert commit(consumer) == 17
    finally:
        consumer._thread.thread_loop.close()


async def test_skipped_records_alone_commit_nothing(tmp_path) -> None:
    # faust acks a partition's events in order (one agent, take_events): while the outcome at
    # 11 is not acked, the skipped 10 and 12 around it move no commit
    _app, consumer = _consumer(tmp_path)
    try:
        async def getmany(active_partitions, timeout):
            return {TP: [rec(10, True), rec(11, False), rec(12, True), rec(13, False)]}
        consumer._thread.getmany = getmany
        await consumer._getmany(None, 1.0)
        consumer._committed_offset[TP] = 10
        assert commit(consumer) is None
        consumer._acked[TP].extend([11])
        assert commit(consumer) == 12
        consumer._acked[TP].extend([13])
        assert commit(consumer) == 14
    finally:
        consumer._thread.thread_loop.close()
