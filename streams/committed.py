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

from collections.abc import Iterable, Iterator
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


def runs(offsets: Iterable[int]) -> Iterator[tuple[int, int]]:
    """Ascending offsets as runs of consecutive ones, (first, last) inclusive."""
    first = last = None
    for o in offsets:
        if last is not None and o == last + 1:
            last = o
            continue
        if first is not None and last is not None:
            yield first, last
        first = last = o
    if first is not None and last is not None:
        yield first, last


class CommittedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return CommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:
        """The fetched records without the ``skipped`` ones, whose offsets become gaps of
        their partitions: faust's commit passes over a gap once an offset after it is acked,
        as over a transaction's marker. Each per-record step of faust (message, event, the
        stream's hand-over, ack) costs the brain's event loop a few turns shared with the
        route loop (docs/benchmark.md, event-apply delay)."""
        records = await super()._getmany(active_partitions, timeout)
        for tp in list(records or ()):
            kept: list[Any] = []
            drop: list[int] = []
            for r in records[tp]:
                if skipped(r):
                    drop.append(r.offset)
                else:
                    kept.append(r)
            if not drop:
                continue
            for first, last in runs(drop):
                await self._add_gap(tp, first, last)
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
