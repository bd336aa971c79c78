"""The retry scheduler: moves envelopes from the delay topics back to the queue when due.

Each tier topic ``delay.<T>s`` is consumed in order; a record becomes actionable T seconds after
it was written (its hop time), so only the head of each partition is looked at and a partition
whose head is not due is paused until then (no scanning, no spinning). The records fetched behind
a paused head wait in a read-ahead buffer of at most ``AHEAD_BYTES`` per partition (the rest is
fetched again later), so a head that comes due is moved at once, without another fetch, and
the next one takes its place: memory is bounded by partitions x ``AHEAD_BYTES`` however many
retries are pending (docs/benchmark.md, "Retries: a million pending"). At its hop a message
either moves to a shorter tier or, when due, goes back to its ISP's queue partition (after a
fresh MX lookup when the old answer's TTL has run out). Cleared or expired messages end here
with a final event. What comes due together is written in one Kafka transaction with the delay
offsets it moves (``<prefix>delay.<node>``): a worker killed mid-move leaves nothing that
read-committed readers see, and the next owner moves it once (at least once before).
"""
from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from kmta.config import Config
from kmta.pipeline.deferral import defer, hold, park
from kmta.pipeline.fencing import FENCED, TXN_TIMEOUT_MS, Renewals, broken, exit_fenced, renewed
from kmta.pipeline.kafkaio import (
    FETCH_MAX_BYTES,
    CompactedView,
    Rebalance,
    client_options,
    delay_topic,
    make_producer,
)
from kmta.pipeline.metrics import DELAY_MOVED
from kmta.pipeline.outputs import CLEARED, Ending, Out, ended, event_out, internal_event, write
from kmta.pipeline.resolver import MxStatus, Resolver
from kmta.policy.kb import KnowledgeBase
from kmta.policy.partitions import PartitionMap
from kmta.policy.reputation import held_by as reputation_hold
from schemas import Envelope, Status, envelope_codec

log = logging.getLogger(__name__)

__all__ = ["AHEAD_BYTES", "DelayScheduler", "held_by", "is_cleared"]

AHEAD_BYTES = 256 * 1024  # read-ahead kept behind a partition's head (and fetched at a time)
MAX_WAIT = 0.5  # seconds a poll waits when no head is coming due sooner


def is_cleared(env: Envelope, states: Mapping[str, object]) -> bool:
    st = states.get(env.isp)
    cb = st.get("clear_before") if isinstance(st, dict) else None
    return cb is not None and env.accepted_at <= cb


def held_by(env: Envelope, states: Mapping[str, object]) -> str | None:
    """Why a reputation hold at the envelope's ISP stops it (its campaign or sending domain
    is held: ``IspState.holds``), else None."""
    st = states.get(env.isp)
    holds = st.get("holds") if isinstance(st, dict) else None
    return reputation_hold(holds, env.isp, env.campaign, env.sender)


class DelayScheduler:
    def __init__(self, config: Config, kb: KnowledgeBase, pmap: PartitionMap,
                 resolver: Resolver, states: CompactedView, rng: random.Random,
                 node: str = "delay", on_fenced: Callable[[], None] | None = None) -> None:
        self._c = config
        self._group = f"{config.kafka.topic_prefix}delay"
        self._txn_id = f"{config.kafka.topic_prefix}delay.{node}"
        self._renewals = Renewals()
        self._on_fenced = on_fenced or exit_fenced
        self._kb = kb
        self._pmap = pmap
        self._resolver = resolver
        self._states = states
        self._rng = rng
        self.router = None  # set by the app (enqueue)
        self._tiers = {delay_topic(config, t): t for t in config.kafka.delay_tiers}
        self._consumer: AIOKafkaConsumer | None = None
        self._producer = None
        self._task: asyncio.Task | None = None
        # per partition: fetched records not moved yet (the partition is paused while any are),
        # the decoded head (envelope or None when undecodable, actionable at), and the first
        # offset not committed yet (where to read again after an error)
        self._held: dict[TopicPartition, deque[ConsumerRecord]] = {}
        self._heads: dict[TopicPartition, tuple[Envelope | None, float]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._lock = asyncio.Lock()  # a rebalance waits for the moves in progress
        self._generation = 0  # bumped at each revocation: a poll from before it is dropped
        self.moved = 0

    def hold(self, env: Envelope, now: float, first: bool = True) -> list[Out] | None:
        """A held message waits ``[reputation] recheck`` seconds on the delay topics (no
        attempt counted); the first time with a ``deferred`` event saying why. None: not
        held."""
        why = held_by(env, self._states.values)
        return None if why is None else hold(self._c, env, why, now, first)

    def dns_retry(self, env: Envelope, now: float) -> list[Out]:
        """Router hook: DNS failed temporarily -> count an attempt and retry per the ISP rule."""
        env.attempt += 1
        rule = self._kb.effective(env.isp, self._live_rules(env.isp))
        ev = internal_event(env, Status.DEFERRED, 451, "4.4.3", "DNS lookup failed temporarily",
                            "dns_failure", now)
        return defer(self._c, rule.retry, env, ev, now, self._rng)

    def _live_rules(self, isp: str) -> dict | None:
        st = self._states.values.get(isp)
        return st.get("rules") if isinstance(st, dict) else None

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
            # senders park envelopes here in their transactions: an aborted one must not wake
            isolation_level="read_committed", auto_offset_reset="earliest",
            # an idle fetch held MAX_WAIT (was 200 ms: 48 partitions, 5 fetches a second); a
            # record written to a tier answers it at once. A partition resumed meanwhile (its
            # read-ahead moved) is fetched when the held fetch returns: a refill at most
            # MAX_WAIT later (VIEW_WAIT_MS in kmta/pipeline/kafkaio.py)
            max_poll_records=2000, max_partition_fetch_bytes=AHEAD_BYTES,
            fetch_max_wait_ms=int(MAX_WAIT * 1000), fetch_max_bytes=FETCH_MAX_BYTES)
        await c.start()
        # on assignment positions restart from the committed offsets: nothing to do then
        c.subscribe(list(self._tiers), listener=Rebalance(self._revoked))
        self._consumer = c
        self._task = asyncio.create_task(self._run(), name="delay-scheduler")

    async def stop(self, grace: float = 15.0) -> None:
        """Let the moves in progress be written and committed, then stop: cancelled in the
        middle, a release written but not committed would be released again by the next
        owner (the message queued twice)."""
        if self._task:
            locked = False
            try:
                locked = await asyncio.wait_for(self._lock.acquire(), grace)
            except TimeoutError:
                pass  # stuck (e.g. the broker is gone): stop anyway, at least once
            self._task.cancel()  # now it waits in a poll or for the lock: nothing half done
            await asyncio.gather(self._task, return_exceptions=True)
            if locked:
                self._lock.release()
        if self._consumer:
            await self._consumer.stop()
        if self._producer:
            await self._producer.stop()

    async def _run(self) -> None:
        c = self._consumer
        assert c is not None
        while True:
            try:
                batch = await c.getmany(timeout_ms=self._wait_ms())
                generation = self._generation
                async with self._lock:
                    if generation != self._generation:
                        batch = {}  # polled before a revocation: read again by the owner
                    for tp, records in batch.items():
                        self._next.setdefault(tp, records[0].offset)
                        self._held.setdefault(tp, deque()).extend(records)
                    await self._move_due(set(batch))
            except asyncio.CancelledError:
                raise
            except FENCED as e:
                if not self._renewals.allow(time.monotonic()):
                    log.critical("this worker's transactional id %s was taken over (is another "
                                 "worker named so?): stopping", self._txn_id)
                    self._on_fenced()
                    raise
                log.warning("delay transaction fenced (%r): a new producer moves it again", e)
                self._rewind()
                self._producer = await renewed(self._producer, self._new_producer)
            except Exception:
                log.exception("delay scheduler error; reading again from the last commit")
                if broken(self._producer):  # see kmta/pipeline/fencing.py
                    self._producer = await renewed(self._producer, self._new_producer)
                self._rewind()
                await asyncio.sleep(1.0)

    def _wait_ms(self) -> int:
        """Until the soonest paused head comes due (at most MAX_WAIT): a due head is moved
        without waiting for a fetch."""
        now = time.time()
        soonest = min((wake for _, wake in self._heads.values()), default=now + MAX_WAIT)
        return math.ceil(max(0.0, min(soonest - now, MAX_WAIT)) * 1000)

    def _head(self, tp: TopicPartition, r: ConsumerRecord) -> tuple[Envelope | None, float]:
        head = self._heads.get(tp)
        if head is None:
            hop = r.timestamp / 1000.0 + self._tiers[tp.topic]
            try:
                env = envelope_codec.decode(r.value or b"")
            except ValueError:
                log.error("undecodable record on %s at %s dropped", tp, r.offset)
                head = (None, 0.0)
            else:
                head = (env, min(hop, env.due_at or hop))
            self._heads[tp] = head
        return head

    async def _move_due(self, fetched: set[TopicPartition]) -> None:
        """Move every head that is due (and the next ones, while due); write what that
        makes, then commit every partition that moved in one request."""
        c = self._consumer
        assert c is not None
        outs: list[Out] = []
        done: dict[TopicPartition, int] = {}
        for tp, held in list(self._held.items()):
            while held:
                r = held[0]
                env, wake = self._head(tp, r)
                now = time.time()
                if env is not None:
                    if now < wake:
                        break
                    outs += await self._release(env, now)
                held.popleft()
                del self._heads[tp]
                done[tp] = r.offset
                DELAY_MOVED.labels(f"{self._tiers[tp.topic]:g}").inc()
            if tp in fetched or not held:
                self._settle(tp, held)
        if done:
            assert self._producer is not None
            async with self._producer.transaction():
                await write(self._producer, outs)
                await self._producer.send_offsets_to_transaction(
                    {tp: OffsetAndMetadata(off + 1, "") for tp, off in done.items()},
                    self._group)
            for tp, off in done.items():
                if tp in self._next:
                    self._next[tp] = off + 1

    def _settle(self, tp: TopicPartition, held: deque[ConsumerRecord]) -> None:
        """Resume a partition with nothing held; pause one whose head is not due, keeping at
        most AHEAD_BYTES of what was just fetched (the rest is fetched again when the buffer
        runs out)."""
        c = self._consumer
        assert c is not None
        if not held:
            del self._held[tp]
            c.resume(tp)
            return
        c.pause(tp)
        size = 0
        for i, r in enumerate(held):
            size += len(r.value or b"")
            if size > AHEAD_BYTES and i > 0:
                c.seek(tp, r.offset)
                for _ in range(len(held) - i):
                    held.pop()
                break

    def _rewind(self) -> None:
        """After an error: forget the read-ahead and read again from the first record not
        committed (what the aborted transaction wrote is never seen: moved again, once)."""
        c = self._consumer
        assignment = c.assignment() if c is not None else set()
        for tp, off in self._next.items():
            if c is not None and tp in assignment:
                c.seek(tp, off)
                c.resume(tp)
        self._held.clear()
        self._heads.clear()

    async def _revoked(self, revoked: list[TopicPartition]) -> None:
        async with self._lock:  # the moves in progress are written and committed first
            self._generation += 1
            for tp in revoked:
                self._held.pop(tp, None)
                self._heads.pop(tp, None)
                self._next.pop(tp, None)

    async def _release(self, env: Envelope, now: float) -> list[Out]:
        if is_cleared(env, self._states.values):
            return [ended(self._c, env, Ending.CANCELLED, CLEARED, now)]
        if env.expires_at is not None and env.expires_at <= now:
            return [ended(self._c, env, Ending.EXPIRED, "message expired while waiting for retry",
                          now)]
        held = self.hold(env, now, first=False)
        if held is not None:
            return held
        due = env.due_at or now
        if due - now > 0.05:
            self.moved += 1
            return [park(self._c, env, due, now)]
        stale = (not env.mx or env.mx_resolved_at is None
                 or now > env.mx_resolved_at + max(env.mx_ttl or 0.0, 60.0))
        if stale:
            res = await self._resolver.mx(env.domain)
            if res.status is MxStatus.OK:
                env.mx = res.hosts
                env.mx_resolved_at = now
                env.mx_ttl = res.ttl
                env.isp = self._kb.isp_for(env.domain, [h.host for h in res.hosts])
                assert self.router is not None  # MTA-STS may have changed meanwhile too
                env.tls_policy = await self.router.tls_policy(env.domain, now)
            elif res.permanent:
                return [event_out(self._c, internal_event(
                    env, Status.BOUNCED, 550, "5.1.2", res.detail, "bad_domain", now))]
            elif not env.mx:
                return self.dns_retry(env, now)
        env.due_at = None
        assert self.router is not None
        return self.router.enqueue(env, now)

