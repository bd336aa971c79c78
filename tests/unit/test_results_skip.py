"""The brain's consumer drops the results records of ``queued`` events by their header before
faust makes events of them (streams/committed.py), and faust's commit still passes over them;
the router's records carry that header, an outcome's never (kmta/pipeline/outputs.py)."""
from __future__ import annotations

import asyncio
import random
import tracemalloc
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


def offsets(spans_or_records):
    return [r.offset for r in spans_or_records]


def test_split_spans_run_across_markers_up_to_a_kept_record() -> None:
    # 12 is a transaction's marker (no record): the span of skipped 10-14 runs over it
    kept, spans, end = committed.split([rec(10, True), rec(11, True), rec(13, True),
                                        rec(14, True), rec(15, False), rec(17, True)])
    assert (offsets(kept), spans, end) == ([15], [(10, 14), (17, 17)], 17)
    kept, spans, end = committed.split([rec(3, False), rec(5, True), rec(6, False)])
    assert (offsets(kept), spans, end) == ([3, 6], [(5, 5)], None)
    assert committed.split([rec(3, False)]) == ([committed.split([rec(3, False)])[0][0]],
                                                [], None)


def test_split_carries_the_open_gap_on() -> None:
    # the previous fetch ended with a skipped record at 20: the next span starts there
    kept, spans, end = committed.split([rec(23, True), rec(24, True)], open_at=20)
    assert (kept, spans, end) == ([], [(20, 24)], 24)
    # a kept record first: the open gap ends where it was, nothing new to add
    kept, spans, end = committed.split([rec(22, False), rec(23, True)], open_at=20)
    assert (offsets(kept), spans, end) == ([22], [(23, 23)], 23)
    # read again after a seek back (offsets at or before the open end): spans of their own
    kept, spans, end = committed.split([rec(15, True), rec(16, True)], open_at=20)
    assert (kept, spans, end) == ([], [(15, 16)], 16)
    kept, spans, end = committed.split([rec(30, True), rec(12, True)])
    assert (kept, spans, end) == ([], [(30, 30), (12, 12)], 12)


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


async def test_gap_stays_one_interval_while_a_queue_builds(tmp_path) -> None:
    # ISPs paused: every results record is a queued event, in transactions of 5 records and a
    # marker, fetched a few at a time; nothing is acked until the drain. The gap tree stays
    # one interval (it held one per transaction and fetch: ~600 B each, rebuilt per gap)
    _app, consumer = _consumer(tmp_path)
    try:
        fetches = []
        offset = 0
        for _ in range(400):
            batch = []
            for _ in range(3):
                batch += [rec(offset + i, True) for i in range(5)]
                offset += 6  # the transaction's marker at offset + 5
            fetches.append(batch)
        fetches.append([rec(offset, False)])  # the first outcome, after the resume

        async def getmany(active_partitions, timeout):
            return {TP: fetches.pop(0)}
        consumer._thread.getmany = getmany
        consumer._committed_offset[TP] = 0
        for _ in range(400):
            assert await consumer._getmany(None, 1.0) == {}
            assert len(consumer._gap[TP]) == 1
        # from 1: faust's _add_gap starts a gap after the committed offset
        assert (consumer._gap[TP].begin(), consumer._gap[TP].end()) == (1, offset - 1)
        records = await consumer._getmany(None, 1.0)
        assert offsets(records[TP]) == [offset]
        # faust's drain loop, handing the outcome over, adds the offsets since the last record
        # it handed over: here the last transaction's marker is the one not in the gap yet
        await consumer._add_gap(TP, offset - 1, offset - 1)
        assert commit(consumer) is None  # nothing acked yet
        consumer._acked[TP].append(offset)
        assert commit(consumer) == offset + 1  # past the whole gap and the outcome
    finally:
        consumer._thread.thread_loop.close()


async def test_open_gap_not_carried_into_a_new_gap_tree(tmp_path) -> None:
    # a rebalance drops the partition's gap tree (faust: on_partitions_revoked): the gap left
    # open before it does not stretch over offsets this consumer never fetched
    _app, consumer = _consumer(tmp_path)
    try:
        fetches = [[rec(10, True), rec(11, True)], [rec(40, True)]]

        async def getmany(active_partitions, timeout):
            return {TP: fetches.pop(0)}
        consumer._thread.getmany = getmany
        await consumer._getmany(None, 1.0)
        consumer._gap.pop(TP)
        await consumer._getmany(None, 1.0)
        assert [(i.begin, i.end) for i in consumer._gap[TP]] == [(40, 41)]
    finally:
        consumer._thread.thread_loop.close()


async def _history(pair, seed: int) -> list[tuple[int | None, int | None]]:
    """One partition's results as the brain meets them (kept outcomes, skipped queued events
    in spans across markers, faust's gaps before each kept record it hands over), acks in
    order some time after, and commits between, applied alike to both consumers of ``pair``
    (ours, then one computing faust's own ``_new_offset``): their commits each time. Each
    commit is checked safe: every kept record below the committed offset acked."""
    from faust.transport.consumer import Consumer as FaustConsumer

    rng = random.Random(seed)
    pending: list[int] = []
    done: set[int] = set()
    kept: list[int] = []
    out: list[tuple[int | None, int | None]] = []
    handed = skip_from = None

    async def gap(first: int, last: int) -> None:
        for c in pair:
            await c._add_gap(TP, first, last)

    for o in range(1, 400):
        kind = rng.choice(["kept", "skip", "skip", "skip", "marker"])
        if kind == "skip" and skip_from is None:
            skip_from = o
        if kind == "skip" and rng.random() < 0.2:  # a fetch ends here
            await gap(skip_from, o)
            skip_from = None
        if kind == "kept":
            if skip_from is not None:
                await gap(skip_from, o - 1)
                skip_from = None
            if handed is not None and o - handed > 1:  # faust's _drain_messages
                await gap(handed + 1, o)
            handed = o
            pending.append(o)
            kept.append(o)
        while pending and rng.random() < 0.5:
            acked = pending.pop(0)
            done.add(acked)
            for c in pair:
                c._acked[TP].append(acked)
                c._acked_index[TP].add(acked)
        if rng.random() < 0.15:  # faust's _filter_committable_offsets
            step = []
            for c, new_offset in zip(pair, (committed.CommittedConsumer._new_offset,
                                            FaustConsumer._new_offset), strict=True):
                offset = new_offset(c, TP)
                if offset is not None and c._should_commit(TP, offset):
                    c._committed_offset[TP] = offset
                    assert all(k in done for k in kept if k < offset), (seed, offset)
                step.append(c._committed_offset[TP])
            out.append((step[0], step[1]))
    return out


async def test_commits_safe_and_never_behind_fausts(tmp_path) -> None:
    # faust's own _new_offset stops a run at an offset both acked and in a gap (its run of
    # consecutive numbers breaks at a duplicate), so it may commit less far, never further
    for seed in range(60):
        pair = [_consumer(tmp_path / f"{side}{seed}")[1] for side in "ot"]
        try:
            steps = await _history(pair, seed)
            assert all(f is None or (o is not None and o >= f) for o, f in steps), seed
            assert steps[-1][0] is not None
        finally:
            for c in pair:
                c._thread.thread_loop.close()


async def test_commit_after_a_long_queue_allocates_no_offset_list(tmp_path) -> None:
    # 200,000 queued events behind paused ISPs, then the first outcome: faust listed every
    # offset of the gap at once (66 B an offset: 13 MB here); the commit stays small
    _app, consumer = _consumer(tmp_path)
    try:
        consumer._committed_offset[TP] = 0
        await consumer._add_gap(TP, 1, 200_000)
        consumer._acked[TP].append(200_001)
        consumer._acked_index[TP].add(200_001)
        tracemalloc.start()
        try:
            assert commit(consumer) == 200_002
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 100_000, peak
        assert not consumer._gap[TP] and not consumer._acked[TP]
    finally:
        consumer._thread.thread_loop.close()
