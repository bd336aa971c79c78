"""The retry scheduler: moves envelopes from the delay topics back to the queue when due.

Each tier topic ``delay.<T>s`` is consumed in order; a record becomes actionable T seconds after
it was written (its hop time), so only the head of each partition is looked at and a partition
whose head is not due is paused until then (no scanning, no spinning). At its hop a message either
moves to a shorter tier or, when due, goes back to its ISP's queue partition (after a fresh MX
lookup when the old answer's TTL has run out). Cleared or expired messages end here with a
final event.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from kmta.config import Config
from kmta.deferral import defer, park
from kmta.kafkaio import CompactedView, delay_topic, make_producer
from kmta.policy.kb import KnowledgeBase
from kmta.policy.partitions import PartitionMap
from schemas import Envelope, Status
from streams.outputs import Out
from streams.resolver import MxStatus, Resolver

log = logging.getLogger(__name__)

__all__ = ["DelayScheduler", "is_cleared"]


def is_cleared(env: Envelope, states: Mapping[str, object]) -> bool:
    st = states.get(env.isp)
    cb = st.get("clear_before") if isinstance(st, dict) else None
    return cb is not None and env.accepted_at <= cb


class DelayScheduler:
    def __init__(self, config: Config, kb: KnowledgeBase, pmap: PartitionMap,
                 resolver: Resolver, states: CompactedView, rng: random.Random) -> None:
        self._c = config
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
        self._wake: dict[TopicPartition, asyncio.TimerHandle] = {}
        self.moved = 0

    def dns_retry(self, env: Envelope, now: float) -> list[Out]:
        """Router hook: DNS failed temporarily -> count an attempt and retry per the ISP rule."""
        env.attempt += 1
        rule = self._kb.effective(env.isp, self._live_rules(env.isp))
        from streams.router import internal_event

        ev = internal_event(env, Status.DEFERRED, 451, "4.4.3", "DNS lookup failed temporarily",
                            "dns_failure", now)
        return defer(self._c, rule.retry, env, ev, now, self._rng)

    def _live_rules(self, isp: str) -> dict | None:
        st = self._states.values.get(isp)
        return st.get("rules") if isinstance(st, dict) else None

    async def start(self) -> None:
        self._producer = make_producer(self._c)
        await self._producer.start()
        c = AIOKafkaConsumer(
            *self._tiers, bootstrap_servers=self._c.kafka.bootstrap_servers,
            group_id=f"{self._c.kafka.topic_prefix}delay", enable_auto_commit=False,
            # senders park envelopes here in their transactions: an aborted one must not wake
            isolation_level="read_committed",
            auto_offset_reset="earliest", max_poll_records=2000, fetch_max_wait_ms=200)
        await c.start()
        self._consumer = c
        self._task = asyncio.create_task(self._run(), name="delay-scheduler")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer:
            await self._consumer.stop()
        if self._producer:
            await self._producer.stop()

    async def _run(self) -> None:
        c = self._consumer
        assert c is not None
        while True:
            try:
                batch = await c.getmany(timeout_ms=500)
                for tp, records in batch.items():
                    await self._partition(tp, records)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep scheduling; the offset is not committed
                log.exception("delay scheduler error; retrying")
                await asyncio.sleep(1.0)

    async def _partition(self, tp: TopicPartition, records: list) -> None:
        c = self._consumer
        assert c is not None
        tier = self._tiers[tp.topic]
        outs: list[Out] = []
        done_offset = None
        for r in records:
            now = time.time()
            hop = r.timestamp / 1000.0 + tier
            try:
                env = Envelope.model_validate_json(r.value)
            except ValueError:
                log.error("undecodable record on %s at %s dropped", tp, r.offset)
                done_offset = r.offset
                continue
            wake = min(hop, env.due_at or hop)
            if now < wake:
                self._sleep(tp, r.offset, wake - now)
                break
            outs += await self._release(env, now)
            done_offset = r.offset
        if outs:
            futs = [await self._producer.send(o.topic, o.value, key=o.key, partition=o.partition)
                    for o in outs]
            await asyncio.gather(*futs)
        if done_offset is not None:
            await c.commit({tp: OffsetAndMetadata(done_offset + 1, "")})

    def _sleep(self, tp: TopicPartition, offset: int, seconds: float) -> None:
        c = self._consumer
        assert c is not None
        c.seek(tp, offset)
        c.pause(tp)
        old = self._wake.pop(tp, None)
        if old:
            old.cancel()
        self._wake[tp] = asyncio.get_running_loop().call_later(
            max(seconds, 0.01), self._resume, tp)

    def _resume(self, tp: TopicPartition) -> None:
        self._wake.pop(tp, None)
        if self._consumer and tp in self._consumer.assignment():
            self._consumer.resume(tp)

    async def _release(self, env: Envelope, now: float) -> list[Out]:
        from streams.router import event_out, internal_event

        if is_cleared(env, self._states.values):
            return [event_out(self._c, internal_event(
                env, Status.CANCELLED, 554, "5.3.0", "queue cleared by an operator",
                "cancelled", now))]
        if env.expires_at is not None and env.expires_at <= now:
            return [event_out(self._c, internal_event(
                env, Status.EXPIRED, 554, "5.4.7", "message expired while waiting for retry",
                "expired", now))]
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
            elif res.permanent:
                return [event_out(self._c, internal_event(
                    env, Status.BOUNCED, 550, "5.1.2", res.detail, "bad_domain", now))]
            elif not env.mx:
                return self.dns_retry(env, now)
        env.due_at = None
        assert self.router is not None
        return self.router.enqueue(env, now)

