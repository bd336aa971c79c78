"""The route loop: outbox records -> router -> queue partitions, on a Kafka consumer of its own.

Routing runs beside the faust agents, not as one of them: faust feeds all of a worker's agents
from one fetch loop, so a burst of outbox records waiting for the router held back the delivery
events the brain must react to (measured: a throttle seen 17 s late behind a burst of 5,000
messages, 60 s behind 7,000 while senders were busy). With its own consumer the burst only
competes for CPU. Offsets are committed after everything a batch produced was acknowledged
(at least once, like the delay scheduler); a failed batch is read again.
"""
from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import IllegalStateError
from aiokafka.structs import OffsetAndMetadata

from kmta.config import Config
from kmta.pipeline.kafkaio import FETCH, client_options, make_producer
from kmta.pipeline.metrics import ROUTED
from kmta.pipeline.outputs import RECORD_ERRORS, Out, write_each
from streams.router import Router

log = logging.getLogger(__name__)

__all__ = ["OutboxRoute"]


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

        while not self._stopping:
            batch = await c.getmany(timeout_ms=200)
            if not batch:
                continue
            records = [r for recs in batch.values() for r in recs]
            try:
                routed = await asyncio.gather(*(one(r) for r in records))
                if not await self._write(records, list(routed)):
                    raise ConnectionError("stopping before the batch was written")
                # a partition the group moved away meanwhile is its new owner's to commit
                owned = c.assignment()
                offsets = {tp: OffsetAndMetadata(recs[-1].offset + 1, "")
                           for tp, recs in batch.items() if tp in owned}
                if offsets:
                    await c.commit(offsets)
                self.routed += len(records)
                ROUTED.inc(len(records))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("routing a batch failed; reading it again")
                self._reread(batch)
                await asyncio.sleep(1.0)

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

    async def _write(self, records: list, routed: list[list[Out]]) -> bool:
        """Write what each record became. A record whose outputs the broker refuses for
        themselves (too large, not encodable) goes to the dead-letter topic instead; errors of
        the cluster (unreachable, leader moving) are retried for the records they hit, until
        written or stopping (False: the caller reads the batch again)."""
        todo = list(range(len(records)))
        refused: set[int] = set()
        delay = 0.5
        while todo:
            errors = await write_each(self._producer, [routed[i] for i in todo])
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
