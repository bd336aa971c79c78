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


class Transport(faust_aiokafka.Transport):
    Consumer = CommittedConsumer


def install(app: Any) -> None:
    """Give ``app`` the read_committed transport, built as faust builds its own
    (``App._new_transport``)."""
    app.transport = Transport(app.conf.broker_consumer, app)
