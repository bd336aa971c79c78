"""Taking messages off the queue topic: accepting each record into its lane (or ending,
parking or dead-lettering it), rebalances, flow control (pausing partitions), and parking what
a long-blocked lane holds (``kmta.policy.parking`` decides when and until when)."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from kmta.config import Config
from kmta.pipeline.metrics import UNEXPECTED_ERRORS
from kmta.pipeline.outputs import CLEARED, Ending
from kmta.policy.parking import held_until, must_flow, park_until
from kmta.policy.partitions import PartitionMap
from schemas import envelope_codec
from senders.checkpoint import Checkpoint
from senders.lane import Item, Lane
from senders.lanes import LaneKey, Lanes
from senders.offsetfetch import fetch_stable
from senders.records import Records
from senders.suspension import Suspension, suspended

log = logging.getLogger(__name__)

__all__ = ["REVOKE_GRACE", "Consumer", "Intake"]

REVOKE_GRACE = 10.0  # seconds a rebalance waits for in-flight deliveries to be written
# seconds to read a partition's stable commit point at assignment: a killed owner's open
# transaction holds it until the broker aborts it, up to TXN_TIMEOUT_MS (10 s) plus the broker's
# check interval (transaction.abort.timed.out.transaction.cleanup.interval.ms, 10 s by default)
# after the kill. Given up, the next owner repeats what was finished past the commit point
COMMITTED_TIMEOUT = 30.0


class Consumer(Protocol):
    """What the intake needs of aiokafka's ``AIOKafkaConsumer``."""

    def assignment(self) -> set[TopicPartition]: ...

    def paused(self) -> set[TopicPartition]: ...

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...


class Record(Protocol):
    offset: int
    value: bytes | None


class Intake:
    """``busy()`` counts the messages taken but not finished (being delivered or waiting for
    their write): with the lanes' queues it is what flow control holds to
    ``sender.max_in_flight``. ``kick(lane)`` starts delivery for a lane."""

    def __init__(self, config: Config, pmap: PartitionMap, lanes: Lanes,
                 checkpoint: Checkpoint, records: Records, kick: Callable[[Lane], None],
                 busy: Callable[[], int], consumer: Consumer | None = None,
                 suspension: Suspension | None = None) -> None:
        self._c = config
        self.pmap = pmap
        self.lanes = lanes
        self.checkpoint = checkpoint
        self.records = records
        self._kick = kick
        self._busy = busy
        self.consumer = consumer
        self.suspension = suspension
        self.topic = config.topic("queue")
        self.paused_by_lane: dict[TopicPartition, LaneKey] = {}
        self.paused_at: dict[TopicPartition, float] = {}
        self.errors = 0  # records whose taking failed unexpectedly (each dead-lettered)
        self.skipped = 0  # records a previous owner of their partition had finished

    # -- records -----------------------------------------------------------------------------
    def accept_or_dead_letter(self, tp: TopicPartition, r: Record) -> None:
        """``accept``; a record it fails on unexpectedly goes to the dead-letter topic (with
        its bytes) and the partition goes on."""
        try:
            self.accept(tp, r)
        except Exception as e:
            self.errors += 1
            UNEXPECTED_ERRORS.labels("sender", "intake").inc()
            log.exception("taking %s offset %s failed; dead-lettered", tp, r.offset)
            self.checkpoint.write(tp, r.offset, [self.records.dead_letter(
                tp.topic, tp.partition, r.offset,
                f"internal error taking the message: {type(e).__name__}: {e}", r.value,
                time.time())])

    def accept(self, tp: TopicPartition, r: Record) -> None:
        if self.checkpoint.track(tp, r.offset):
            self.skipped += 1  # finished by the partition's previous owner
            return
        now = time.time()
        try:
            env = envelope_codec.decode(r.value or b"")
        except ValueError as e:
            self.checkpoint.write(tp, r.offset, [self.records.dead_letter(
                tp.topic, tp.partition, r.offset, f"undecodable queue record: {e}", r.value,
                now)])
            return
        lane = self.lanes.for_envelope(env)
        if lane.cleared(env):
            self._finish(tp, r.offset, self.records.ended(env, Ending.CANCELLED, CLEARED, now))
            return
        why = lane.held(env)
        if why is not None:  # queued before the brain held its campaign or domain
            self._finish(tp, r.offset, self.records.held(env, why, now))
            return
        if env.expires_at is not None and env.expires_at <= now:
            self._finish(tp, r.offset, self.records.ended(
                env, Ending.EXPIRED, "message expired in the queue", now))
            return
        if self.suspension is not None and suspended(lane, now):
            # its destination does not answer: no waiting in memory
            self.suspension.defer(lane, tp.partition, r.offset, env, now)
            return
        blocked = lane.blocked_until(now)
        full = len(lane.queue) >= self._c.sender.isp_backlog
        dedicated = self.pmap.dedicated_isp(tp.partition) == env.isp
        if (blocked is not None or full) and self._must_flow(lane, tp.partition, blocked, now):
            # a shared partition must keep flowing for the other ISPs: park this one
            until = park_until(blocked, len(lane.queue), lane.rate_per_second(), now)
            self._finish(tp, r.offset, self.records.parked(env, until, now))
            return
        lane.queue.append(Item(env, tp.partition, r.offset))  # the lane's: it gets its outcome
        try:
            if dedicated and (blocked is not None
                              or len(lane.queue) >= self._c.sender.isp_backlog):
                self.pause(tp, lane)
            self._kick(lane)
        except Exception:
            self.errors += 1
            UNEXPECTED_ERRORS.labels("sender", "kick").inc()
            log.exception("starting delivery for %s failed", env.id,
                          extra={"isp": env.isp, "message_id": env.id})

    def _finish(self, tp: TopicPartition, offset: int, outs: list[Any]) -> None:
        self.checkpoint.write(tp, offset, outs)

    def _must_flow(self, lane: Lane, partition: int, blocked: float | None, now: float) -> bool:
        return must_flow(self.pmap.dedicated_isp(partition) == lane.isp, blocked is not None,
                         len(self._c.pools), lane.isp_blocked_until(now) is not None)

    # -- what the lanes hold -----------------------------------------------------------------
    def _finish_where(self, lane: Lane, outs_for: Callable[[Item], list[Any] | None]) -> None:
        """Finish each message of the lane's queue that ``outs_for`` gives outcome records
        for (written with its offset); the others stay queued, in order."""
        keep = []
        for item in lane.queue:
            outs = outs_for(item)
            if outs is None:
                keep.append(item)
            else:
                self._finish(TopicPartition(self.topic, item.partition), item.offset, outs)
        lane.keep(keep)

    def park_held(self, lane: Lane, now: float) -> None:
        """A lane blocked for long (a lock, a pause) parks the messages it holds from
        partitions that must keep flowing, in the delay topics: held, they would keep those
        partitions' commit point back for the whole lock."""
        blocked = lane.blocked_until(now)
        until = held_until(blocked, now) if lane.queue else None
        if until is None:
            return
        self._finish_where(lane, lambda item: self.records.parked(item.env, until, now)
                           if self._must_flow(lane, item.partition, blocked, now) else None)

    def cancel_cleared(self, lane: Lane, now: float) -> None:
        """An operator cleared the ISP's queue: what the lane holds from before ends."""
        self._finish_where(lane, lambda item: self.records.ended(
            item.env, Ending.CANCELLED, CLEARED, now) if lane.cleared(item.env) else None)

    def park_holds(self, lane: Lane, now: float) -> None:
        """The brain held a campaign or a sending domain at the lane's ISP: what the lane holds
        of it goes to the delay topics (routed before the hold, it was queued already)."""
        if lane.state is None or not lane.state.holds:
            return

        def held(item: Item) -> list[Any] | None:
            why = lane.held(item.env)
            return None if why is None else self.records.held(item.env, why, now)
        self._finish_where(lane, held)

    def drop(self, partitions: Collection[int]) -> None:
        """Forget the queued messages of partitions given away (not started: the next owner
        delivers them)."""
        for lane in self.lanes:
            lane.keep([i for i in lane.queue if i.partition not in partitions])

    # -- partitions --------------------------------------------------------------------------
    async def assigned(self, tps: list[TopicPartition]) -> None:
        new = [tp for tp in tps if tp not in self.checkpoint.trackers]
        committed = await self.committed(new)
        for tp in new:
            self.checkpoint.adopt(tp, committed.get(tp))
            om = committed.get(tp)
            if om is not None and om.offset >= 0 and self.consumer is not None:
                # read from the stable commit point, not from what aiokafka fetched itself
                self.consumer.seek(tp, om.offset)
        self.lanes.reslot()
        log.info("%s assigned %s", self.records.node, sorted(tp.partition for tp in tps))

    async def committed(self, tps: list[TopicPartition]
                        ) -> dict[TopicPartition, OffsetAndMetadata]:
        """The group's committed offsets with their metadata (aiokafka's public
        ``committed()`` drops the metadata); empty if they cannot be read in time, and then
        the next owner may deliver again what the last one finished past its commit point."""
        if not tps or self.consumer is None:
            return {}
        if getattr(self.consumer, "_coordinator", None) is None:
            return {}
        try:
            return await asyncio.wait_for(
                fetch_stable(self.consumer, self.checkpoint.group, tps), COMMITTED_TIMEOUT)
        except Exception as e:  # noqa: BLE001 - best effort, see above
            log.warning("stable commit points of %s not read (%r): reading them unstable",
                        tps, e)
        try:
            # with their metadata still: what the last owner finished past its commit point
            # (only an outcome committed in the last instants may be repeated)
            result: dict[TopicPartition, OffsetAndMetadata] = await asyncio.wait_for(
                self.consumer._coordinator.fetch_committed_offsets(tps), COMMITTED_TIMEOUT)
            return result
        except Exception as e:  # noqa: BLE001 - best effort, see above
            log.error("committed offsets of %s not read (%r): what their last owner finished "
                      "past the commit point is delivered again", tps, e)
            return {}

    async def revoked(self, tps: list[TopicPartition]) -> None:
        """Before the group moves partitions: drop what was not started, let what is in flight
        finish and be written (bounded), then commit. Otherwise every rebalance would make the
        next owner deliver and report the in-flight messages a second time."""
        self.drop({tp.partition for tp in tps})
        deadline = time.monotonic() + REVOKE_GRACE
        while self._busy() > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self.checkpoint.flush()
        for tp in tps:
            self.checkpoint.release(tp)
            self.paused_by_lane.pop(tp, None)
        # a message in flight may have gone back to its lane meanwhile (its connection ended
        # before its reply): its next owner delivers it
        self.drop({tp.partition for tp in tps})
        self.lanes.reslot()

    # -- flow control ------------------------------------------------------------------------
    def pause(self, tp: TopicPartition, lane: Lane) -> None:
        if self.consumer is not None and tp not in self.paused_by_lane:
            self.consumer.pause(tp)
            self.paused_by_lane[tp] = (lane.isp, lane.pool)
            self.paused_at[tp] = time.time()

    def flow_control(self) -> None:
        """Pause every partition while the node holds ``sender.max_in_flight`` messages;
        resume a partition its lane paused once the lane is unblocked and half drained (or an
        operator's clear drains it: those records end cancelled on arrival)."""
        c = self.consumer
        if c is None:
            return
        now = time.time()
        if self.lanes.queued() + self._busy() >= self._c.sender.max_in_flight:
            c.pause(*list(c.assignment()))
            return
        for tp in list(c.paused()):
            key = self.paused_by_lane.get(tp)
            lane = self.lanes.get(key) if key else None
            if lane is not None:
                clear = lane.state.clear_before if lane.state is not None else None
                draining = clear is not None and clear >= self.paused_at.get(tp, now)
                if not draining and (lane.blocked_until(now) is not None
                                     or len(lane.queue) > self._c.sender.isp_backlog // 2):
                    continue
                self.paused_by_lane.pop(tp, None)
            c.resume(tp)
