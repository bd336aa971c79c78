"""The brain's Kafka transport: faust's aiokafka driver, but its worker consumer reads
``read_committed`` and drops the results records of ``queued`` events before faust makes events
of them.

faust gives its worker consumer ``isolation_level="read_uncommitted"`` unless
``processing_guarantee="exactly_once"`` (which also makes faust's producer transactional, which
the brain does not want). The senders write results in transactions: an aborted one (a sender
fenced or crashed) is written again at another offset, so a read_uncommitted brain would apply
the outcome twice. Every other results reader in kmta reads committed; so does this one.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka

from kmta.pipeline.outputs import QUEUED_HEADER

ISOLATION = "read_committed"


class CommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka keeps the constructor's isolation_level as this private string and hands it
        # to its Fetcher in start(); faust builds the consumer (not started yet) with every
        # other setting, so this is the one place to change it. tests/unit/test_committed.py
        # fails if an upgrade renames the attribute or stops honouring it.
        consumer._isolation_level = ISOLATION
        return consumer


def skipped(record: Any) -> bool:
    """A record the brain does not apply, told by its headers alone: a ``queued`` event (the
    router's, one per routed message: half the results records, which the decide agent
    decoded only to drop them)."""
    return QUEUED_HEADER in (record.headers or ())


def split(records: Iterable[Any], open_at: int | None = None
          ) -> tuple[list[Any], list[tuple[int, int]], int | None]:
    """One partition's fetched records (ascending offsets) as the kept ones, the spans of
    ``skipped`` ones between them, (first, last) inclusive, and the offset of the last record
    if it was skipped (the gap left open), else None.

    A span runs from a skipped record to the last one before the next kept record, across
    the offsets no record was fetched for (transaction markers, aborted records: faust's own
    loop makes gaps of those too). ``open_at`` is the previous fetch's open end: a span before
    any kept record starts there, overlapping the gap already added, so faust's merge joins
    the two. Without that the gap tree held an interval per transaction, fetch and partition
    while nothing was acked (a queue building behind paused ISPs: ~600 B each, and faust
    rebuilds the whole tree for every gap it adds)."""
    kept: list[Any] = []
    spans: list[tuple[int, int]] = []
    start = end = open_at
    new = False  # the span holds a record of this fetch
    for r in records:
        if not skipped(r):
            if new:
                spans.append((start, end))  # type: ignore[arg-type]
            start = end = None
            new = False
            kept.append(r)
        elif end is not None and r.offset > end:
            end, new = r.offset, True
        else:  # the first span, or a record read again after a seek back: a span of its own
            if new:
                spans.append((start, end))  # type: ignore[arg-type]
            start = end = r.offset
            new = True
    if new:
        spans.append((start, end))  # type: ignore[arg-type]
    return kept, spans, end


class CommittedConsumer(faust_aiokafka.Consumer):
    # a partition's gap left open by the last fetch: (the gap tree it is the tail of, its
    # last offset)
    _open_gaps: dict[Any, tuple[Any, int]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._open_gaps = {}

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return CommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:
        """The fetched records without the ``skipped`` ones, whose offsets become gaps of
        their partitions: faust's commit passes over a gap once an offset after it is acked,
        as over a transaction's marker. Each per-record step of faust (message, event, the
        stream's hand-over, ack) costs the brain's event loop a few turns shared with the
        route loop (docs/benchmark.md, event-apply delay). A gap left open at the end of a
        fetch is carried on by the next one (``split``) while it is still the tail of the
        same gap tree: a rebalance drops the tree, and the next gap starts afresh."""
        records = await super()._getmany(active_partitions, timeout)
        opened = self._open_gaps
        for tp in list(records or ()):
            tree, open_at = opened.pop(tp, (None, None))
            if open_at is not None and not (tree is self._gap.get(tp) and tree
                                            and tree.end() == open_at + 1):
                open_at = None
            kept, spans, end = split(records[tp], open_at)
            for first, last in spans:
                await self._add_gap(tp, first, last)
            if end is not None:
                opened[tp] = (self._gap.get(tp), end)
            if len(kept) == len(records[tp]):
                continue
            if kept:
                records[tp] = kept
            else:
                del records[tp]
        return records

    def _new_offset(self, tp: Any) -> int | None:
        """The offset to commit for ``tp`` (None: nothing new), as faust's
        ``Consumer._new_offset`` computes it: its acked offsets and the gap intervals that
        begin before the highest of them, taken as one sorted run from the lowest (None if a
        hole lies between the committed offset and it); the first consecutive run is
        committed. faust makes a list of every offset of those intervals (66 B an offset at
        its peak: one commit after a queue of N queued events built up behind paused ISPs
        held ~N/partitions ints at once); here the run is found interval by interval, the
        committed part chopped off the gap and the rest left in it (faust moves the rest into
        the acked list: counted the same, as the highest acked offset stays above it)."""
        acked = self._acked[tp]
        gap = self._gap.get(tp)
        if not acked or not gap:
            return super()._new_offset(tp)  # type: ignore[no-any-return]
        acked.sort()
        spans = sorted((i.begin, i.end) for i in gap.overlap(0, acked[-1]))
        if not spans:
            return super()._new_offset(tp)  # type: ignore[no-any-return]
        first = min(acked[0], spans[0][0])
        committed = self._committed_offset[tp]
        if committed and first - committed > 1:
            return None
        # faust counts the committed offset itself as done: its _add_gap starts a gap after
        # it, and its check above lets a run start right after it
        stop = max(first, committed + 1) if committed else first
        for begin, end in sorted([*spans, *((o, o + 1) for o in acked)]):
            if begin > stop:
                break
            stop = max(stop, end)
        n = bisect_left(acked, stop)
        self._acked_index[tp].difference_update(acked[:n])
        del acked[:n]
        gap.chop(0, stop)
        return stop


class Transport(faust_aiokafka.Transport):
    Consumer = CommittedConsumer


def install(app: Any) -> None:
    """Give ``app`` the read_committed transport, built as faust builds its own
    (``App._new_transport``)."""
    app.transport = Transport(app.conf.broker_consumer, app)
