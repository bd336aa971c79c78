"""Outcomes and queue offsets, written together in Kafka transactions (after Quix Streams'
``Checkpoint``): a queue offset is committed only with the outcome of its message, so a crash
loses nothing and repeats no committed outcome.

Readers of the results and delay topics read committed records only, so an outcome whose offset
was not committed (a sender killed in between) is never seen: the next owner of the partition
delivers the message again and its outcome is the only one (exactly one final event per id; the
SMTP side may still see that message twice). The offsets finished past a partition's commit
point go with the commit as its metadata (``senders.tracker``); the next owner skips them.

A message gets one outcome written, from the tracker that read it: a delivery still running when
its partition was revoked (past ``senders.intake.REVOKE_GRACE``) finishes after the last commit
of that partition, and its next owner (maybe this node again) reads and delivers it again; the
late outcome is dropped, or it would be a second final event.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from kmta.pipeline.fencing import FENCED, Renewals, broken, exit_fenced, renewed
from kmta.pipeline.outputs import Out, write
from senders.tracker import OffsetTracker, decode_done

log = logging.getLogger(__name__)

__all__ = ["FENCED", "TXN_LINGER", "Checkpoint", "Pending", "TransactionalProducer"]

TXN_LINGER = 0.1  # seconds outcomes gather before a transaction (fewer, larger transactions)
RETRY_AFTER = 1.0  # seconds before an aborted transaction is written again

Pending = tuple[TopicPartition, int, list[Out]]  # a message's queue offset and its records


class TransactionalProducer(Protocol):
    """What the checkpoint needs of aiokafka's transactional ``AIOKafkaProducer``."""

    def transaction(self) -> AbstractAsyncContextManager[Any]: ...

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   partition: int | None = None) -> Any: ...

    async def send_offsets_to_transaction(
            self, offsets: dict[TopicPartition, OffsetAndMetadata], group_id: str) -> None: ...


class Checkpoint:
    """The outcomes waiting for the next transaction and the commit point of every partition
    this node owns. ``assignment`` says which partitions the consumer owns right now (a
    transaction's offset commit carries no group generation: never commit for a partition
    given away)."""

    def __init__(self, group: str, assignment: Callable[[], Collection[TopicPartition]],
                 producer: TransactionalProducer | None = None,
                 on_fenced: Callable[[], None] = exit_fenced) -> None:
        self.group = group
        self.producer = producer  # set before the first flush (aiokafka needs the running loop)
        self._assignment = assignment
        self.new_producer: Callable[[], Any] | None = None  # renews a fenced producer
        self._renewals = Renewals()
        self._on_fenced = on_fenced
        self.trackers: dict[TopicPartition, OffsetTracker] = {}
        self._pending: list[Pending] = []
        self._writing = 0  # outcomes of the transaction in progress
        self.late = 0  # outcomes dropped: their partition was revoked before they came
        self._lock = asyncio.Lock()
        self._wanted = asyncio.Event()

    # -- partitions --------------------------------------------------------------------------
    def owned(self) -> set[int]:
        """The queue partitions this node tracks (owns)."""
        return {tp.partition for tp in self.trackers}

    def adopt(self, tp: TopicPartition, committed: OffsetAndMetadata | None) -> None:
        """Start tracking a partition from its group commit (None: never committed); the
        offsets its previous owner finished past that point are skipped."""
        if tp in self.trackers:
            return
        if committed is None or committed.offset < 0:
            self.trackers[tp] = OffsetTracker()
            return
        tr = OffsetTracker(known_done=decode_done(committed.offset, committed.metadata))
        tr.committable = tr.committed = committed.offset
        tr.committed_metadata = committed.metadata or ""
        self.trackers[tp] = tr

    def release(self, tp: TopicPartition) -> None:
        self.trackers.pop(tp, None)

    def track(self, tp: TopicPartition, offset: int) -> bool:
        """A queue record was read; True when a previous owner finished it (skip it)."""
        tracker = self.trackers.setdefault(tp, OffsetTracker())
        if tracker.committed is not None and offset < tracker.committed:
            return True  # below the commit point: finished (a position older than the commit)
        if tracker.add(offset):
            self._wanted.set()  # the commit point may move past it
            return True
        return False

    def idle(self) -> list[tuple[TopicPartition, int | None]]:
        """Partitions whose every offset read is finished and written (``skip_to`` may move
        their commit points), with their commit points."""
        return [(tp, tr.point) for tp, tr in self.trackers.items() if tr.idle]

    def skip_to(self, tp: TopicPartition, position: int) -> None:
        tracker = self.trackers.get(tp)
        if tracker is not None and tracker.skip_to(position):
            self._wanted.set()

    # -- outcomes ----------------------------------------------------------------------------
    @property
    def unwritten(self) -> int:
        """Messages whose outcome waits for a transaction (flow control and the drain count
        them with the ones being delivered)."""
        return len(self._pending) + self._writing

    @property
    def pending(self) -> list[Pending]:
        """The outcomes queued for the next transaction, oldest first (a copy)."""
        return list(self._pending)

    def write(self, tp: TopicPartition, offset: int, outs: list[Out]) -> None:
        """Queue a message's outcome (its result event, its envelope in a delay topic) for the
        next transaction, which also commits its queue offset; dropped unless it is the first
        outcome of an offset read since the partition was (last) assigned."""
        tracker = self.trackers.get(tp)
        if tracker is None or not tracker.claim(offset):
            self.late += 1
            log.warning("outcome of %s offset %d dropped: not read since the partition was "
                        "assigned (revoked while it was delivered: its next owner delivers it "
                        "again) or already written", tp, offset)
            return
        self._pending.append((tp, offset, outs))
        self._wanted.set()

    async def flush(self) -> None:
        """Write every pending outcome and commit the queue offsets they complete in one Kafka
        transaction; an aborted transaction is written again, a cancelled one's outcomes go
        back for the next (the stop's last): their offsets, already marked done, must never
        be committed without them."""
        async with self._lock:
            batch, self._pending = self._pending, []
            self._writing = len(batch)
            try:
                offsets = await self._write(batch)
            finally:
                self._writing = 0
            for tp, om in offsets.items():
                tracker = self.trackers.get(tp)
                if tracker is not None:
                    tracker.committed = om.offset
                    tracker.committed_metadata = om.metadata

    async def _write(self, batch: list[Pending]) -> dict[TopicPartition, OffsetAndMetadata]:
        """Mark the batch done, then write it with the commit points it moves (returned)."""
        for tp, offset, _ in batch:
            tracker = self.trackers.get(tp)
            if tracker is not None:
                tracker.done(offset)
        while True:
            offsets = self.committable()
            if not batch and not offsets:
                return offsets
            assert self.producer is not None, "Checkpoint.producer is set before a flush"
            try:
                async with self.producer.transaction():
                    await write(self.producer, (o for _, _, outs in batch for o in outs))
                    if offsets:
                        await self.producer.send_offsets_to_transaction(offsets, self.group)
                break
            except FENCED as e:
                if self.new_producer is None or not self._renewals.allow(time.monotonic()):
                    log.critical("this node's transactional id was taken over: stopping")
                    raise
                log.warning("transaction fenced (%r): a new producer writes it again", e)
                await self._renew_producer()
            except asyncio.CancelledError:
                self._pending[:0] = batch
                raise
            except Exception:
                log.exception("writing outcomes failed; retrying")
                if self.new_producer is not None and broken(self.producer):
                    await self._renew_producer()  # see kmta/pipeline/fencing.py
                await asyncio.sleep(RETRY_AFTER)
        return offsets

    async def _renew_producer(self) -> None:
        """See kmta/pipeline/fencing.py."""
        assert self.new_producer is not None
        self.producer = await renewed(self.producer, self.new_producer, RETRY_AFTER)

    def committable(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """Commit points that moved, of partitions this node still owns."""
        assigned = self._assignment()
        out = {}
        for tp, tr in self.trackers.items():
            point = tr.point
            if point is None or tp not in assigned:
                continue
            meta = tr.metadata()
            if (point, meta) != (tr.committed, tr.committed_metadata):
                out[tp] = OffsetAndMetadata(point, meta)
        return out

    async def run(self, linger: float = TXN_LINGER) -> None:
        """Write soon after there is something to write (``linger`` gathers more; one
        transaction at a time, what arrives meanwhile goes into the next): the window in which
        a delivered message has no committed outcome stays about ``linger`` plus one
        transaction long. Fenced, nothing more may be written: ``on_fenced`` (exit)."""
        while True:
            await self._wanted.wait()
            await asyncio.sleep(linger)
            self._wanted.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:  # fenced (flush retries everything else)
                log.exception("outcomes cannot be written any more: stopping")
                self._on_fenced()
