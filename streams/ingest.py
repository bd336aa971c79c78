"""The route loop: outbox records -> router -> queue partitions, on a Kafka consumer of its own.

Routing runs beside the faust agents, not as one of them: faust feeds all of a worker's agents
from one fetch loop, so a burst of outbox records waiting for the router held back the delivery
events the brain must react to (measured: a throttle seen 17 s late behind a burst of 5,000
messages, 60 s behind 7,000 while senders were busy). With its own consumer the burst only
competes for CPU. Up to ``DEPTH`` batches are in flight at once (the next one is routed while the
broker acknowledges the last); offsets are committed after everything a batch and the batches
before it produced was acknowledged (at least once, like the delay scheduler); a failed batch is
read again with the ones behind it.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import IllegalStateError
from aiokafka.structs import OffsetAndMetadata

from kmta.config import Config
from kmta.pipeline.kafkaio import FETCH, client_options, make_producer
from kmta.pipeline.metrics import ROUTED
from kmta.pipeline.outputs import RECORD_ERRORS, Out, Sent, acked, send_each
from streams.router import Router

log = logging.getLogger(__name__)

__all__ = ["DEPTH", "OutboxRoute"]

DEPTH = 4  # batches routed and handed to the producer whose offsets are not committed yet


@dataclass
class _Flight:
    """A batch routed and handed to the producer, its offsets not committed yet."""

    batch: dict[Any, list[Any]]
    records: list[Any]
    routed: list[list[Out]]
    sent: Sent


def _first_records(*flights: _Flight | None) -> dict[Any, list[Any]]:
    """Per partition, the first record of the earliest of these batches (to read again)."""
    first: dict[Any, list[Any]] = {}
    for f in flights:
        if f is None:
            continue
        for tp, recs in f.batch.items():
            if tp not in first and recs:
                first[tp] = [recs[0]]
    return first


def _abandon(sent: Sent) -> None:
    """Records of a batch read again: their acknowledgements are not waited for (an error is
    taken, so asyncio does not report it as never retrieved)."""
    for futs in sent.futures:
        for f in futs:
            f.add_done_callback(lambda f: f.cancelled() or f.exception())


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class OutboxRoute:
    """Consumes the outbox in group ``<prefix>route`` and routes up to ``concurrency`` records
    at a time (DNS lookups overlap; routing itself is CPU work)."""

    def __init__(self, config: Config, router: Router, concurrency: int) -> None:
        self._c = config
        self._router = router
        self._concurrency = max(1, concurrency)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.routed = 0

    @property
    def consumer(self) -> AIOKafkaConsumer | None:
        return self._consumer  # the worker's metrics and readiness read it

    async def start(self) -> None:
        self._producer = make_producer(self._c)
        await self._producer.start()
        c = AIOKafkaConsumer(
            self._c.topic("outbox"), **client_options(self._c),
            group_id=f"{self._c.kafka.topic_prefix}route", enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=max(100, 4 * self._concurrency),
            fetch_max_wait_ms=100, **FETCH)
        await c.start()
        self._consumer = c
        self._task = asyncio.create_task(self._run(), name="outbox-route")

    async def stop(self, grace: float = 15.0) -> None:
        """Finish the batch being routed (its outputs written, its offsets committed), then
        stop. Cancelling mid-batch would make the next worker route the batch again: its
        messages would be queued, and delivered, twice."""
        self._stopping = True
        if self._task:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer:
            await self._consumer.stop()
        if self._producer:
            await self._producer.stop()

    async def _run(self) -> None:
        c = self._consumer
        assert c is not None
        gate = asyncio.Semaphore(self._concurrency)

        async def one(r) -> list[Out]:
            async with gate:
                return await self._router.route(r.value, r.topic, r.partition, r.offset)

        # Up to DEPTH batches at a time: while the broker acknowledges what the last batches
        # became, the next is fetched, routed and handed to the producer. Offsets are
        # committed once everything their batch (and every batch before it) produced is
        # acknowledged, in order. Waiting for each batch's acknowledgements and commit before
        # routing the next left the router idle for more than half of the time at 2 KB
        # (docs/benchmark.md, "2 KB: where the time went (waits)"); a failed batch is read
        # again with the ones behind it.
        flights: deque[_Flight] = deque()
        try:
            while not self._stopping:
                batch = await c.getmany(timeout_ms=0 if flights else 200)
                if not batch and not flights:
                    continue
                nxt: _Flight | None = None
                try:
                    if batch:
                        records = [r for recs in batch.values() for r in recs]
                        routed = list(await asyncio.gather(*(one(r) for r in records)))
                        nxt = _Flight(batch, records, routed,
                                      await send_each(self._producer, routed))
                        flights.append(nxt)
                        nxt = None
                    # nothing more to read now: settle all; else the oldest beyond DEPTH - 1,
                    # and the ones already acknowledged
                    due = len(flights) if not batch else max(0, len(flights) - DEPTH + 1)
                    while len(flights) > due and flights[due].sent.done():
                        due += 1
                    if due:
                        await self._settle([flights[i] for i in range(due)])
                        for _ in range(due):  # only now: a failed one is read again
                            flights.popleft()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("routing a batch failed; reading it again")
                    for f in (*flights, nxt):
                        if f is not None:
                            _abandon(f.sent)
                    self._reread(_first_records(*flights, nxt))
                    flights.clear()
                    await asyncio.sleep(1.0)
        finally:
            if flights and not _cancelling():
                try:
                    await self._settle(list(flights))
                except Exception:
                    log.exception("writing the last batches failed; the next worker reads "
                                  "them again")

    async def _settle(self, flights: list[_Flight]) -> None:
        """Wait until everything these batches became is written (retrying what failed), then
        commit their offsets at once (raises when it cannot: the caller reads them again)."""
        c = self._consumer
        assert c is not None
        for f in flights:
            if not await self._write(f.records, f.routed, f.sent):
                raise ConnectionError("stopping before the batch was written")
        # a partition the group moved away meanwhile is its new owner's to commit
        owned = c.assignment()
        offsets = {tp: OffsetAndMetadata(recs[-1].offset + 1, "")
                   for f in flights for tp, recs in f.batch.items() if tp in owned}
        if offsets:
            await c.commit(offsets)
        n = sum(len(f.records) for f in flights)
        self.routed += n
        ROUTED.inc(n)

    def _reread(self, batch: dict) -> None:
        """Read the batch again from its first records, where this consumer still owns the
        partition (seeking a partition a rebalance took away raises, and the route loop would
        end: measured, a worker that stopped routing for good after a rebalance)."""
        c = self._consumer
        assert c is not None
        owned = c.assignment()
        for tp, recs in batch.items():
            if tp not in owned:
                continue
            try:
                c.seek(tp, recs[0].offset)
            except IllegalStateError:
                pass  # taken away since: the new owner reads it from the committed offset

    async def _write(self, records: list, routed: list[list[Out]],
                     sent: Sent | None = None) -> bool:
        """Write what each record became. A record whose outputs the broker refuses for
        themselves (too large, not encodable) goes to the dead-letter topic instead; errors of
        the cluster (unreachable, leader moving) are retried for the records they hit, until
        written or stopping (False: the caller reads the batch again). ``sent``: the records
        already handed to the producer (``send_each`` of all of ``routed``)."""
        todo = list(range(len(records)))
        refused: set[int] = set()
        delay = 0.5
        while todo:
            if sent is None:
                sent = await send_each(self._producer, [routed[i] for i in todo])
            errors = await acked(sent)
            sent = None
            again = []
            for i, err in zip(todo, errors, strict=True):
                if err is None:
                    continue
                if isinstance(err, RECORD_ERRORS):
                    r = records[i]
                    log.warning("record %s/%s/%s could not be written (%s): dead-lettered",
                                r.topic, r.partition, r.offset, err)
                    lettered = i in refused  # even its dead letter was refused: no original
                    refused.add(i)
                    routed[i] = [self._router.dead_letter(
                        f"could not be written to Kafka: {type(err).__name__}: {err}",
                        b"" if lettered else (r.value or b""), r.topic, r.partition,
                        r.offset)]
                else:
                    log.warning("writing a routed record failed (%s); retrying", err)
                again.append(i)
            todo = again
            if todo:
                if self._stopping:
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        return True
