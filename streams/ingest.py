"""The route loop: outbox records -> router -> queue partitions, on a Kafka consumer of its own.

Routing runs beside the faust agents, not as one of them: faust feeds all of a worker's agents
from one fetch loop, so a burst of outbox records waiting for the router held back the delivery
events the brain must react to (measured: a throttle seen 17 s late behind a burst of 5,000
messages, 60 s behind 7,000 while senders were busy). With its own consumer the burst only
competes for CPU.

A batch is written in one Kafka transaction with the outbox offsets it moves: its queue
records, results events, ids and dead letters become visible to read-committed readers (the
senders, the panel, ``kmta results``) together with the commit, or not at all. A worker killed
mid-batch leaves an open transaction that the broker aborts after ``TXN_TIMEOUT_MS``, and the
next owner routes the batch again from the committed offset: nothing is queued, delivered or
reported twice (at least once before: measured, a kill -9 with 480 of 2,000 routed gave 128
ids two final events). A partition given away in a rebalance is first finished and committed
(``_revoked``). Left: a worker that stalls past its group session and then commits (a zombie)
can still route a batch its successor routes too; aiokafka's TxnOffsetCommit carries no group
generation to fence it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError
from aiokafka.structs import OffsetAndMetadata

from kmta.config import Config
from kmta.pipeline.fencing import FENCED, TXN_TIMEOUT_MS, Renewals, broken, exit_fenced, renewed
from kmta.pipeline.kafkaio import FETCH, Rebalance, client_options, make_producer
from kmta.pipeline.metrics import ROUTED
from kmta.pipeline.outputs import RECORD_ERRORS, Out, acked, send_each
from streams.router import Router

log = logging.getLogger(__name__)

__all__ = ["TXN_RECORDS", "TXN_SPAN", "OutboxRoute"]

TXN_RECORDS = 2000  # outbox records a routing transaction takes at most
TXN_SPAN = 0.2  # seconds a transaction goes on taking batches fetched already
ROUTE_WAIT_MS = 500  # how long the broker holds the route consumer's idle fetch (VIEW_WAIT_MS)


class _Unwritten(Exception):
    """Some records of a batch were not acknowledged: the transaction is aborted."""

    def __init__(self, errors: list[BaseException | None]) -> None:
        super().__init__(f"{sum(e is not None for e in errors)} records not written")
        self.errors = errors


class _Txn:
    """The batches one routing transaction writes: the records, what each became, and per
    partition the first and last offset."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.records: list[Any] = []
        self.routed: list[list[Out]] = []
        self.first: dict[TopicPartition, int] = {}
        self.last: dict[TopicPartition, int] = {}

    def add(self, batch: dict, records: list[Any], routed: list[list[Out]]) -> None:
        self.records += records
        self.routed += routed
        for tp, recs in batch.items():
            if recs:
                self.first.setdefault(tp, recs[0].offset)
                self.last[tp] = recs[-1].offset


class OutboxRoute:
    """Consumes the outbox in group ``<prefix>route`` and routes up to ``concurrency`` records
    at a time (DNS lookups overlap; routing itself is CPU work). ``node`` names the worker's
    transactional id (``<prefix>route.<node>``)."""

    def __init__(self, config: Config, router: Router, concurrency: int,
                 node: str = "route", on_fenced: Callable[[], None] | None = None) -> None:
        self._c = config
        self._router = router
        self._concurrency = max(1, concurrency)
        self._group = f"{config.kafka.topic_prefix}route"
        self._txn_id = f"{config.kafka.topic_prefix}route.{node}"
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: Any = None
        self._renewals = Renewals()
        # another live worker has this one's name: stop the process, as a sender node does
        self._on_fenced = on_fenced or exit_fenced
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()  # one batch at a time; a revoke waits for it
        self._stopping = False
        self.routed = 0

    @property
    def consumer(self) -> AIOKafkaConsumer | None:
        return self._consumer  # the worker's metrics and readiness read it

    def _new_producer(self) -> Any:
        return make_producer(self._c, transactional_id=self._txn_id,
                             transaction_timeout_ms=TXN_TIMEOUT_MS)

    async def start(self) -> None:
        self._producer = self._new_producer()
        await self._producer.start()
        c = AIOKafkaConsumer(
            **client_options(self._c),
            group_id=self._group, enable_auto_commit=False,
            # a producer writing the outbox in transactions: only what it committed is routed
            isolation_level="read_committed",
            auto_offset_reset="earliest", max_poll_records=max(100, 4 * self._concurrency),
            # an idle fetch held ROUTE_WAIT_MS; a record arriving answers it at once (the route
            # loop pauses nothing; it seeks only to read a failed batch again)
            fetch_max_wait_ms=ROUTE_WAIT_MS, **FETCH)
        c.subscribe([self._c.topic("outbox")], listener=Rebalance(self._revoked))
        await c.start()
        self._consumer = c
        self._task = asyncio.create_task(self._run(), name="outbox-route")

    async def stop(self, grace: float = 15.0) -> None:
        """Finish the batch being routed (its outputs and offsets committed), then stop.
        Cancelled mid-batch, its transaction is aborted and the next worker routes it again."""
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

    async def _revoked(self, revoked: list[TopicPartition]) -> None:
        """Before partitions move: the batch in progress is committed while they are ours (or,
        failing, read again by their next owner from the last commit)."""
        async with self._lock:
            pass

    async def _run(self) -> None:
        c = self._consumer
        assert c is not None
        while not self._stopping:
            batch = await c.getmany(timeout_ms=200)
            if not batch:
                continue
            async with self._lock:
                txn = _Txn(time.monotonic())
                try:
                    await self._take(txn, batch)

                    async def more(txn: _Txn = txn) -> bool:
                        """Route what is fetched already into this transaction while its
                        records are being acknowledged (the router idled 55-65 % of the time
                        at 2 KB waiting for each batch's writes, h13g's measurement)."""
                        if (self._stopping or len(txn.records) >= TXN_RECORDS
                                or time.monotonic() - txn.started >= TXN_SPAN):
                            return False
                        nxt = await c.getmany(timeout_ms=0)
                        if not nxt:
                            return False
                        await self._take(txn, nxt)
                        return True
                    if not await self._write(txn, more):
                        raise ConnectionError("stopping before the batch was written")
                    self.routed += len(txn.records)
                    ROUTED.inc(len(txn.records))
                except asyncio.CancelledError:
                    raise
                except FENCED:
                    log.critical("this worker's transactional id %s was taken over (is another "
                                 "worker named so?): stopping", self._txn_id)
                    self._on_fenced()
                    raise
                except Exception:
                    log.exception("routing a batch failed; reading it again")
                    self._reread(txn.first)
                    await asyncio.sleep(1.0)

    async def _take(self, txn: _Txn, batch: dict) -> None:
        """Route a fetched batch's records into ``txn``, up to ``concurrency`` at a time: that
        many tasks each take the next record when done with one (DNS lookups overlap), not a
        task per record behind a semaphore (a task and an event-loop turn per message:
        docs/benchmark.md). What each record became stays at its index."""
        records = [r for recs in batch.values() for r in recs]
        routed: list[list[Out]] = [[]] * len(records)
        todo = iter(enumerate(records))
        route = self._router.route

        async def runner() -> None:
            for i, r in todo:
                routed[i] = await route(r.value, r.topic, r.partition, r.offset)

        n = min(self._concurrency, len(records))
        if n == 1:
            await runner()
        else:
            await asyncio.gather(*(runner() for _ in range(n)))
        txn.add(batch, records, routed)

    def _reread(self, first: dict[TopicPartition, int]) -> None:
        """Read a transaction's batches again from their first offsets, where this consumer
        still owns the partition (seeking a partition a rebalance took away raises, and the
        route loop would end: measured, a worker that stopped routing for good after a
        rebalance)."""
        c = self._consumer
        assert c is not None
        owned = c.assignment()
        for tp, offset in first.items():
            if tp not in owned:
                continue
            try:
                c.seek(tp, offset)
            except IllegalStateError:
                pass  # taken away since: the new owner reads it from the committed offset

    async def _write(self, txn: _Txn,
                     more: Callable[[], Awaitable[bool]] | None = None) -> bool:
        """Write what each record of ``txn`` became, with the outbox offsets it moves, in one
        transaction; ``more()`` adds batches to it while its records are acknowledged (first
        attempt only). A record whose outputs the broker refuses for themselves (too large,
        not encodable) goes to the dead-letter topic instead and the transaction is written
        again; errors of the cluster (unreachable, leader moving) abort it and it is written
        again, until written or stopping (False: the caller reads it again). Fenced by a new
        producer of the same id after a broker failure (see kmta/pipeline/fencing.py), a new
        producer writes it again; fenced again and again, FENCED is raised."""
        c = self._consumer
        records, routed = txn.records, txn.routed
        refused: set[int] = set()
        delay = 0.5
        while True:
            try:
                async with self._producer.transaction():
                    sent = [await send_each(self._producer, routed)]
                    while more is not None:
                        n = len(routed)
                        if not await more():
                            break
                        sent.append(await send_each(self._producer, routed[n:]))
                    more = None
                    errors = [e for s in sent for e in await acked(s)]
                    if any(e is not None for e in errors):
                        raise _Unwritten(errors)
                    # a partition the group moved away meanwhile is its new owner's to route
                    owned = c.assignment() if c is not None else set(txn.last)
                    offsets = {tp: OffsetAndMetadata(last + 1, "")
                               for tp, last in txn.last.items() if tp in owned}
                    if offsets:
                        await self._producer.send_offsets_to_transaction(offsets, self._group)
                return True
            except _Unwritten as u:
                for i, err in enumerate(u.errors):
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
                if all(e is None or isinstance(e, RECORD_ERRORS) for e in u.errors):
                    continue  # the dead letters go at once
            except FENCED as e:
                if not self._renewals.allow(time.monotonic()):
                    raise
                log.warning("routing transaction fenced (%r): a new producer writes it", e)
                self._producer = await renewed(self._producer, self._new_producer)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the cluster: abort, write it again
                log.warning("writing a routed batch failed (%r); retrying", e)
                if broken(self._producer):
                    log.warning("the routing producer can write no more transactions: a new "
                                "one writes it")
                    try:
                        self._producer = await renewed(self._producer, self._new_producer,
                                                       give_up=lambda: self._stopping)
                    except Exception:  # noqa: BLE001 - stopping: the next owner routes it
                        return False
            if self._stopping:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
