"""A sender node: one member of the senders' consumer group on the queue topic.

It owns SMTP connections and enforces the brain's decisions. A queue offset is committed only
after the message's outcome (result event, and the envelope in a delay topic when it must be
retried) is durably written (acks=all), so a crash loses nothing.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    OutOfOrderSequenceNumber,
    ProducerFenced,
    TransactionalIdAuthorizationFailed,
)
from aiokafka.structs import OffsetAndMetadata

from kmta.config import Config
from kmta.pipeline.deferral import defer, park
from kmta.pipeline.kafkaio import CompactedView, Rebalance, client_options, make_producer
from kmta.pipeline.outputs import Out, event_out, internal_event, write
from kmta.policy.classify import Classifier
from kmta.policy.kb import KnowledgeBase
from kmta.policy.partitions import PartitionMap
from kmta.policy.speed import Outcome as SpeedOutcome
from kmta.policy.verdict import judge
from schemas import DeadLetter, DeliveryEvent, Envelope, IspLoad, IspState, NodeStats, Status
from senders.fencing import Renewals
from senders.lane import Item, Lane
from senders.suspension import Suspension, suspended
from senders.tracker import OffsetTracker, decode_done
from senders.transport import ConnectFailed, Outcome, SmtpTransport, Transport

log = logging.getLogger(__name__)

__all__ = ["SenderNode"]

# another producer with this node's transactional id took over: nothing more may be written
FENCED = (ProducerFenced, OutOfOrderSequenceNumber, TransactionalIdAuthorizationFailed)
TXN_TIMEOUT_MS = 10_000  # a killed node's open transaction blocks read-committed readers this long
TXN_LINGER = 0.1  # seconds outcomes gather before a transaction (fewer, larger transactions)
REVOKE_GRACE = 10.0  # seconds a rebalance waits for in-flight deliveries to be written
PARK_HELD_AFTER = 30.0  # a lane blocked at least this long parks what it holds (see _park_held)


class SenderNode:
    def __init__(self, config: Config, kb: KnowledgeBase, pmap: PartitionMap,
                 transport: Transport | None = None, node: str | None = None) -> None:
        self.c = config
        self.kb = kb
        self.pmap = pmap
        self.node = node or config.sender.node or f"{socket.gethostname()}-{os.getpid()}"
        self.transport = transport or SmtpTransport(
            config.delivery.smtp_port, config.delivery.helo_name,
            config.delivery.allowed_networks, config.delivery.tls, config.delivery.tls_ca_file,
            config.delivery.allow_special)
        self.classifier = Classifier.load()
        self.rng = random.Random()
        self.producer = None  # created in run(): aiokafka needs the running loop
        self.stats_producer = None
        self._pending: list[tuple[TopicPartition, int, list[Out]]] = []
        self._txn_lock = asyncio.Lock()
        self._renewals = Renewals()
        self.states = CompactedView(config, config.topic("state"), self._decode_state,
                                    self._state_changed)
        self.consumer: AIOKafkaConsumer | None = None
        self.lanes: dict[tuple[str, str | None], Lane] = {}
        self.trackers: dict[TopicPartition, OffsetTracker] = {}
        self.paused_by_lane: dict[TopicPartition, tuple[str, str | None]] = {}
        self.paused_at: dict[TopicPartition, float] = {}
        self._commit_wanted = asyncio.Event()
        self.in_flight = 0
        self.delivered = 0
        self.attempts = 0
        self.errors = 0  # messages whose handling failed unexpectedly (each still got an outcome)
        self.skipped = 0  # messages a previous owner of their partition had finished
        self.started_at = time.time()
        self._tasks: set[asyncio.Task] = set()
        self._arrived: dict[tuple[str, str | None], asyncio.Event] = {}
        self._stopping = False
        self._queue_topic = config.topic("queue")
        self._group = f"{config.kafka.topic_prefix}senders"
        self.suspension = Suspension(config, self._queue_topic, self.classifier, self.rng,
                                     self.node, self._write)

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        # outcomes are written off the delivery path (see _outcome): a longer linger batches
        # them into fewer produce requests (measured: less broker and worker CPU per message)
        # outcomes and queue offsets are written together, in Kafka transactions (see
        # _flush); node heartbeats go on a plain producer, outside them
        self.producer = self._txn_producer()
        await self.producer.start()
        self.stats_producer = make_producer(self.c)
        await self.stats_producer.start()
        await self.states.start()
        await asyncio.wait_for(self.states.ready.wait(), 60)
        self.consumer = AIOKafkaConsumer(
            **client_options(self.c),
            group_id=self._group, client_id=self.node,
            enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=500, fetch_max_wait_ms=100, fetch_min_bytes=64 * 1024,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            session_timeout_ms=15000, heartbeat_interval_ms=3000,
            max_poll_interval_ms=300000)
        self.consumer.subscribe([self._queue_topic],
                                listener=Rebalance(self._revoked, self._assigned))
        await self.consumer.start()
        bg = [asyncio.create_task(self._commit_loop()), asyncio.create_task(self._tick_loop()),
              asyncio.create_task(self._stats_loop())]
        try:
            while not stop.is_set():
                batch = await self.consumer.getmany(timeout_ms=200)
                for tp, records in batch.items():
                    for r in records:
                        await self._accept_or_dead_letter(tp, r)
                self._flow_control()
        finally:
            self._stopping = True
            await self._drain(timeout=30)
            for t in bg:
                t.cancel()
            await asyncio.gather(*bg, return_exceptions=True)
            await self._flush()
            await self._publish_stats(stopping=True)
            await self.consumer.stop()
            await self.states.stop()
            await self.producer.stop()
            await self.stats_producer.stop()

    async def _drain(self, timeout: float) -> None:
        """Stop taking new messages; let in-flight deliveries finish and be written."""
        for lane in self.lanes.values():
            lane.queue.clear()
        deadline = time.monotonic() + timeout
        while self.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    # -- state from the brain ----------------------------------------------------------------
    @staticmethod
    def _decode_state(raw: bytes) -> IspState:
        return IspState.model_validate_json(raw)

    def _state_changed(self, key: str, st: object) -> None:
        if not isinstance(st, IspState):
            return
        for lane in self.lanes.values():
            if lane.isp != st.isp or (st.pool and st.pool != lane.pool_name):
                continue
            lane.brain_state(st, time.time())
            if not st.source_ip and not st.pool:
                lane.rule = self.kb.effective(st.isp, st.rules, lane.pool_name)
                if st.clear_before is not None:
                    self._cancel_cleared(lane)
            lane.refresh()
            self._kick(lane)

    def _state_for(self, isp: str, pool: str | None
                   ) -> tuple[IspState | None, dict[str, IspState], IspState | None]:
        """The brain's states for a lane: the whole ISP, its source IPs, the lane's pool."""
        whole = self.states.values.get(isp)
        ips = {k.split("|", 1)[1]: v for k, v in self.states.values.items()
               if k.startswith(isp + "|") and isinstance(v, IspState)}
        pool_st = self.states.values.get(f"{isp}@{pool}") if pool else None
        return (whole if isinstance(whole, IspState) else None, ips,
                pool_st if isinstance(pool_st, IspState) else None)

    # -- partitions --------------------------------------------------------------------------
    async def _assigned(self, tps: list[TopicPartition]) -> None:
        new = [tp for tp in tps if tp not in self.trackers]
        committed = await self._committed(new)
        for tp in new:
            om = committed.get(tp)
            if om is None or om.offset < 0:
                self.trackers[tp] = OffsetTracker()
                continue
            # outcomes the partition's previous owner committed past its commit point
            tr = OffsetTracker(known_done=decode_done(om.offset, om.metadata))
            tr.committable = tr.committed = om.offset
            tr.committed_metadata = om.metadata or ""
            self.trackers[tp] = tr
        self._reslot()
        log.info("%s assigned %s", self.node, sorted(tp.partition for tp in tps))

    async def _committed(self, tps: list[TopicPartition]) -> dict[TopicPartition,
                                                                    OffsetAndMetadata]:
        """The group's committed offsets with their metadata (aiokafka's public
        ``committed()`` drops the metadata); empty if they cannot be read in time, and then
        the next owner may deliver again what the last one finished past its commit point."""
        if not tps or self.consumer is None:
            return {}
        try:
            return await asyncio.wait_for(
                self.consumer._coordinator.fetch_committed_offsets(tps), 15)  # noqa: SLF001
        except Exception as e:  # noqa: BLE001 - best effort, see above
            log.warning("committed offsets of %s not read: %s", tps, e)
            return {}

    async def _revoked(self, tps: list[TopicPartition]) -> None:
        """Before the group moves partitions: drop what was not started, let what is in flight
        finish and be written (bounded), then commit. Otherwise every rebalance would make the
        next owner deliver and report the in-flight messages a second time."""
        gone = {tp.partition for tp in tps}
        for lane in self.lanes.values():
            lane.queue = type(lane.queue)(i for i in lane.queue if i.partition not in gone)
        deadline = time.monotonic() + REVOKE_GRACE
        while self.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self._flush()
        for tp in tps:
            self.trackers.pop(tp, None)
            self.paused_by_lane.pop(tp, None)
        self._reslot()

    def _reslot(self) -> None:
        owned = {tp.partition for tp in self.trackers}
        for lane in self.lanes.values():
            lane.slots = {p: self.pmap.share(lane.isp, p) for p in self.pmap.partitions_of(
                lane.isp) if p in owned}
            lane.refresh()

    def _lane(self, env: Envelope) -> Lane:
        key = (env.isp, env.pool)
        lane = self.lanes.get(key)
        if lane is None:
            pool = self.c.pool(env.pool)
            ips: list[str | None] = list(pool.source_ips) if pool else [None]
            name = pool.name if pool else env.pool
            whole, ip_states, pool_st = self._state_for(env.isp, name)
            rule = self.kb.effective(env.isp, whole.rules if whole else None, name)
            lane = Lane(env.isp, env.pool, rule, ips, state=whole, ip_states=ip_states,
                        pool_name=name, pool_state=pool_st)
            self.lanes[key] = lane
            owned = {tp.partition for tp in self.trackers}
            lane.slots = {p: self.pmap.share(env.isp, p)
                          for p in self.pmap.partitions_of(env.isp) if p in owned}
            lane.refresh()
        return lane

    # -- taking messages off the queue -------------------------------------------------------
    async def _accept_or_dead_letter(self, tp: TopicPartition, r) -> None:  # noqa: ANN001
        """``_accept``; a record it fails on unexpectedly goes to the dead-letter topic (with
        its bytes) and the partition goes on."""
        try:
            await self._accept(tp, r)
        except Exception as e:  # noqa: BLE001 - one record must never stop the sender
            self.errors += 1
            log.exception("taking %s offset %s failed; dead-lettered", tp, r.offset)
            self._write(tp, r.offset, [self._dead_letter(
                tp, r.offset, f"internal error taking the message: {type(e).__name__}: {e}",
                r.value)])

    async def _accept(self, tp: TopicPartition, r) -> None:  # noqa: ANN001
        tracker = self.trackers.setdefault(tp, OffsetTracker())
        if tracker.add(r.offset):
            self.skipped += 1  # finished by the partition's previous owner
            self._commit_wanted.set()
            return
        try:
            env = Envelope.model_validate_json(r.value)
        except ValueError as e:
            self._write(tp, r.offset, [self._dead_letter(
                tp, r.offset, f"undecodable queue record: {e}", r.value)])
            return
        now = time.time()
        lane = self._lane(env)
        item = Item(env, tp.partition, r.offset)
        if lane.cleared(env):
            self._finish_internal(item, Status.CANCELLED, 554, "5.3.0",
                                  "queue cleared by an operator", "cancelled")
            return
        if env.expires_at is not None and env.expires_at <= now:
            self._finish_internal(item, Status.EXPIRED, 554, "5.4.7",
                                  "message expired in the queue", "expired")
            return
        if suspended(lane, now):  # its destination does not answer: no waiting in memory
            self.suspension.defer(lane, tp.partition, r.offset, env, now)
            return
        blocked = lane.blocked_until(now)
        full = len(lane.queue) >= self.c.sender.isp_backlog
        dedicated = self.pmap.dedicated_isp(tp.partition) == env.isp
        if (blocked is not None or full) and self._must_flow(lane, tp.partition, blocked, now):
            # a shared partition must keep flowing for the other ISPs: park this one
            until = blocked if blocked is not None and blocked != float("inf") else None
            if until is None:
                until = now + (30.0 if blocked else max(5.0, len(lane.queue) / max(
                    lane.rate_per_second(), 0.01) / 2))
            self._write(tp, r.offset, [park(self.c, env, until, now)])
            return
        lane.queue.append(item)  # from here on the message is the lane's: it gets its outcome
        try:
            if dedicated and (blocked is not None
                              or len(lane.queue) >= self.c.sender.isp_backlog):
                self._pause(tp, lane)
            self._kick(lane)
        except Exception:  # noqa: BLE001 - queued already; the tick loop kicks the lane again
            self.errors += 1
            log.exception("starting delivery for %s failed", env.id)

    def _must_flow(self, lane: Lane, partition: int, blocked: float | None, now: float) -> bool:
        """True when a partition must keep moving past this lane's messages: a shared
        partition (other ISPs), or the ISP's own while only a pool or source IPs of it are
        blocked (other pools' messages sit on it too)."""
        if self.pmap.dedicated_isp(partition) != lane.isp:
            return True
        return (blocked is not None and len(self.c.pools) > 1
                and lane.isp_blocked_until(now) is None)

    def _park_held(self, lane: Lane, now: float) -> None:
        """A lane blocked for long (a lock, a pause) parks the messages it holds from
        partitions that must keep flowing, in the delay topics: held, they would keep those
        partitions' commit point back for the whole lock."""
        blocked = lane.blocked_until(now)
        if not lane.queue or blocked is None or blocked - now < PARK_HELD_AFTER:
            return
        until = blocked if blocked != float("inf") else now + 30.0
        keep = type(lane.queue)()
        for item in lane.queue:
            if self._must_flow(lane, item.partition, blocked, now):
                tp = TopicPartition(self._queue_topic, item.partition)
                self._write(tp, item.offset, [park(self.c, item.env, until, now)])
            else:
                keep.append(item)
        lane.queue = keep

    def _pause(self, tp: TopicPartition, lane: Lane) -> None:
        if self.consumer and tp not in self.paused_by_lane:
            self.consumer.pause(tp)
            self.paused_by_lane[tp] = (lane.isp, lane.pool)
            self.paused_at[tp] = time.time()

    def _flow_control(self) -> None:
        c = self.consumer
        if c is None:
            return
        now = time.time()
        total = sum(len(lane.queue) for lane in self.lanes.values()) + self.in_flight
        if total >= self.c.sender.max_in_flight:
            c.pause(*[tp for tp in c.assignment()])
            return
        for tp in list(c.paused()):
            key = self.paused_by_lane.get(tp)
            lane = self.lanes.get(key) if key else None
            if lane is not None:
                clear = lane.state.clear_before if lane.state is not None else None
                draining = clear is not None and clear >= self.paused_at.get(tp, now)
                if not draining and (lane.blocked_until(now) is not None
                                     or len(lane.queue) > self.c.sender.isp_backlog // 2):
                    continue
                # a clear drains the paused backlog: those records end cancelled on arrival
                self.paused_by_lane.pop(tp, None)
            c.resume(tp)

    # -- delivering --------------------------------------------------------------------------
    async def _idle(self, lane: Lane, until: float) -> None:
        """Wait until the lane is kicked (new messages or a new state), ``until`` (monotonic)
        or half a second, whichever comes first; the caller then checks everything again."""
        ev = self._arrived.setdefault((lane.isp, lane.pool), asyncio.Event())
        ev.clear()
        try:
            await asyncio.wait_for(ev.wait(), max(0.0, min(until - time.monotonic(), 0.5)))
        except TimeoutError:
            pass

    def _kick(self, lane: Lane) -> None:
        arrived = self._arrived.get((lane.isp, lane.pool))
        if arrived is not None:
            arrived.set()  # idle connections of the lane look again (work, lock, pause)
        if self._stopping:
            return
        now = time.time()
        if lane.blocked_until(now) is not None or now < lane.connect_backoff_until:
            return
        while lane.workers < lane.wanted_workers():
            ip = lane.pick_ip(now)
            if ip is False:
                return
            lane.workers += 1
            lane.conns[ip] = lane.conns.get(ip, 0) + 1
            t = asyncio.create_task(self._worker(lane, ip))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _worker(self, lane: Lane, ip: str | None) -> None:
        conn = None
        sending = lane.rule.sending
        idle_until: float | None = None
        try:
            while not self._stopping:
                now = time.time()
                if lane.blocked_until(now) is not None or lane.ip_blocked(ip, now):
                    break
                if lane.conns.get(ip, 0) > lane.max_connections_per_ip():
                    break  # the cap was lowered (live rule edit, throttle): shed a connection
                if not lane.queue:
                    # an open connection waits up to the rule's idle_timeout for the lane's
                    # next message instead of closing now and reconnecting for it (a burst
                    # arrives fetch by fetch, so the queue runs dry in between)
                    if conn is None or not conn.usable:
                        break
                    if idle_until is None:
                        idle_until = time.monotonic() + sending.idle_timeout
                    elif time.monotonic() >= idle_until:
                        break
                    await self._idle(lane, idle_until)
                    continue
                idle_until = None
                if conn is None or not conn.usable or (
                        conn.delivered >= lane.rule.sending.messages_per_connection):
                    if conn is not None:
                        await conn.close()
                        conn = None
                    counter = lane.conn_counter(ip)
                    wait = counter.wait(lane.connections_per_tact())
                    if wait > 0:
                        await asyncio.sleep(min(wait, 1.0))
                        continue
                    counter.take()
                    head = lane.queue[0]
                    try:
                        conn = await lane_connect(self.transport, head.env, ip, sending)
                        lane.connect_failures = 0
                    except ConnectFailed as e:
                        lane.connect_failures += 1
                        lane.connect_reply = e.outcome.reply
                        lane.connect_backoff_until = time.time() + min(
                            2 ** lane.connect_failures, 60)
                        if lane.queue and lane.queue[0] is head:
                            lane.queue.popleft()
                            await self._outcome(lane, head, e.outcome, ip)
                        if suspended(lane, time.time()):
                            self.suspension.defer_held(lane, time.time())
                        break
                    continue
                pacer = lane.pacer(ip)  # this source IP's slots (limits count per IP)
                d = pacer.delay()
                if d > 0:
                    await asyncio.sleep(min(d, 0.5))
                    continue
                if not lane.queue:
                    break
                pacer.take()
                item = lane.queue.popleft()
                self.in_flight += 1
                lane.in_flight += 1
                try:
                    t0 = time.monotonic()
                    outcome = await conn.deliver(item.env, sending.timeout)
                    lane.observe_latency(time.monotonic() - t0)
                    if (not outcome.accepted and outcome.connection_lost and not item.requeued
                            and (outcome.stage == "mail" and conn.delivered > 0
                                 or outcome.stage == "tls")):
                        # the server closed a used channel, or the message needs a
                        # verified TLS connection (MTA-STS): no attempt, a new connection
                        item.requeued = True
                        lane.queue.appendleft(item)
                        continue
                    await self._outcome_or_fallback(lane, item, outcome, ip)
                finally:
                    self.in_flight -= 1
                    lane.in_flight -= 1
        finally:
            lane.workers -= 1
            lane.conns[ip] = max(0, lane.conns.get(ip, 0) - 1)
            if conn is not None:
                await conn.close()
            if lane.queue and not self._stopping:
                asyncio.get_running_loop().call_later(
                    max(0.05, lane.connect_backoff_until - time.time()), self._kick, lane)

    async def _outcome_or_fallback(self, lane: Lane, item: Item, outcome: Outcome,
                                   ip: str | None) -> None:
        """``_outcome``, and when deciding it fails unexpectedly, the message still gets one:
        a retry later (or its dead letter), so its offset never holds the partition back."""
        try:
            await self._outcome(lane, item, outcome, ip)
        except Exception as e:  # noqa: BLE001 - one message must never stop the sender
            self.errors += 1
            log.exception("deciding the outcome of %s failed", item.env.id)
            self._fallback(item, e)

    def _fallback(self, item: Item, e: BaseException) -> None:
        tp = TopicPartition(self._queue_topic, item.partition)
        now = time.time()
        text = f"internal error: {type(e).__name__}: {e}"[:500]
        try:
            ev = internal_event(item.env, Status.DEFERRED, 451, "4.3.0", text, "internal_error",
                                now, node=self.node)
            outs = defer(self.c, self.kb.effective(item.env.isp).retry, item.env, ev, now,
                         self.rng)
        except Exception:  # noqa: BLE001 - not even that: the envelope to the dead-letter topic
            log.exception("deferring %s failed; dead-lettered", item.env.id)
            outs = [self._dead_letter(tp, item.offset, text, item.env.to_json())]
        self._write(tp, item.offset, outs)

    def _dead_letter(self, tp: TopicPartition, offset: int, reason: str,
                     raw: bytes | None) -> Out:
        dl = DeadLetter(reason=reason[:1000], topic=tp.topic, partition=tp.partition,
                        offset=offset, timestamp=time.time(),
                        original=(raw or b"").decode("utf-8", "replace"))
        return Out(self.c.topic("dlq"), dl.to_json())

    async def _outcome(self, lane: Lane, item: Item, outcome: Outcome, ip: str | None) -> None:
        env = item.env
        now = time.time()
        env.attempt += 1
        lane.attempts += 1
        self.attempts += 1
        reply = outcome.reply
        judged = None if outcome.accepted else judge(reply, self.classifier, lane.rule)
        category = "delivered" if judged is None else judged.category
        matched = None if judged is None else judged.reply_rule
        if matched is not None and matched.action == "lock":
            # counted (and enforced once triggered) at once; the brain confirms within moments
            lane.note_lock_reply(matched, ip, now)
        if judged is not None and judged.speed == SpeedOutcome.THROTTLE.value:
            lane.note_throttle(ip, now)
        ev = DeliveryEvent(
            id=env.id, to=env.rcpt, isp=env.isp, domain=env.domain, status=Status.DELIVERED,
            final=True, attempt=env.attempt, code=reply.code, enhanced_code=reply.enhanced_code,
            response=reply.text[:1000], category=category, internal=reply.internal,
            mx=outcome.mx, source_ip=ip, pool=lane.pool_name, node=self.node, timestamp=now,
            accepted_at=env.accepted_at, campaign=env.campaign, meta=env.meta,
            sender=env.sender, size=len(env.data), tls=outcome.tls)
        verdict = "delivered" if judged is None else judged.verdict
        if verdict == "delivered":
            lane.delivered += 1
            self.delivered += 1
            outs = [event_out(self.c, ev)]
        elif verdict == "bounce":
            outs = [event_out(self.c, ev.model_copy(update={"status": Status.BOUNCED}))]
        else:
            outs = defer(self.c, lane.rule.retry, env, ev, now, self.rng)
        # written in the background: the connection goes on with the next message meanwhile;
        # the offset still becomes committable only once the write is acknowledged (acks=all)
        self._write(TopicPartition(self._queue_topic, item.partition), item.offset, outs)

    def _finish_internal(self, item: Item, status: Status, code: int, enhanced: str, text: str,
                         category: str) -> None:
        ev = internal_event(item.env, status, code, enhanced, text, category, time.time(),
                            node=self.node)
        self._write(TopicPartition(self._queue_topic, item.partition), item.offset,
                    [event_out(self.c, ev)])

    def _cancel_cleared(self, lane: Lane) -> None:
        keep = type(lane.queue)()
        for item in lane.queue:
            if lane.cleared(item.env):
                self._finish_internal(item, Status.CANCELLED, 554, "5.3.0",
                                      "queue cleared by an operator", "cancelled")
            else:
                keep.append(item)
        lane.queue = keep

    # -- writing outcomes, then committing ---------------------------------------------------
    def _write(self, tp: TopicPartition, offset: int, outs: list[Out]) -> None:
        """Queue a message's outcome (its result event, its envelope in a delay topic) for the
        next transaction, which also commits its queue offset."""
        self.in_flight += 1  # counted until written: flow control and the drain at stop see it
        self._pending.append((tp, offset, outs))
        self._commit_wanted.set()

    async def _flush(self) -> None:
        """Write every pending outcome and commit the queue offsets they complete in one Kafka
        transaction. Readers of the results and delay topics read committed records only, so
        an outcome whose offset was not committed (a sender killed in between) is never seen:
        the next owner of the partition delivers the message again and its outcome is the only
        one (exactly one final event per id; the SMTP side may still see that message twice)."""
        async with self._txn_lock:
            batch, self._pending = self._pending, []
            for tp, offset, _ in batch:
                tracker = self.trackers.get(tp)
                if tracker is not None:
                    tracker.done(offset)
            while True:
                offsets = self._committable()
                if not batch and not offsets:
                    return
                try:
                    async with self.producer.transaction():
                        await write(self.producer, (o for _, _, outs in batch for o in outs))
                        if offsets:
                            await self.producer.send_offsets_to_transaction(
                                offsets, self._group)
                    break
                except FENCED as e:
                    if not self._renewals.allow(time.monotonic()):
                        log.critical("this node's transactional id was taken over: stopping")
                        raise
                    log.warning("transaction fenced (%r): a new producer writes it again", e)
                    await self._renew_producer()
                except asyncio.CancelledError:
                    # aborted: these outcomes go with the next transaction (the stop's last),
                    # else their offsets, already marked done, would be committed without them
                    self._pending[:0] = batch
                    raise
                except Exception:  # noqa: BLE001 - aborted: write the same batch again
                    log.exception("writing outcomes failed; retrying")
                    await asyncio.sleep(1.0)
            for tp, om in offsets.items():
                tracker = self.trackers.get(tp)
                if tracker is not None:
                    tracker.committed = om.offset
                    tracker.committed_metadata = om.metadata
            self.in_flight -= len(batch)

    def _txn_producer(self):  # noqa: ANN202
        return make_producer(
            self.c, linger_ms=20, transactional_id=f"{self.c.kafka.topic_prefix}sender.{self.node}",
            transaction_timeout_ms=TXN_TIMEOUT_MS)

    async def _renew_producer(self) -> None:
        """See senders/fencing.py."""
        while True:
            old, self.producer = self.producer, self._txn_producer()
            try:
                await old.stop()
            except Exception:  # noqa: BLE001 - fenced (or never started): closing may fail
                log.debug("closing the old producer failed", exc_info=True)
            try:
                await self.producer.start()
                return
            except Exception as e:  # noqa: BLE001 - the cluster is still recovering
                log.warning("starting a new producer failed (%s); retrying", e)
                await asyncio.sleep(1.0)

    def _committable(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """Commit points that moved, of partitions this node still owns (a transaction's offset
        commit carries no group generation: never commit for a partition given away)."""
        c = self.consumer
        assigned = c.assignment() if c is not None else set()
        out = {}
        for tp, tr in self.trackers.items():
            if tr.committable is None or tp not in assigned:
                continue
            meta = tr.metadata()
            if (tr.committable, meta) != (tr.committed, tr.committed_metadata):
                out[tp] = OffsetAndMetadata(tr.committable, meta)
        return out

    async def _commit_loop(self) -> None:
        """Write soon after there is something to write (TXN_LINGER gathers more; one
        transaction at a time, what arrives meanwhile goes into the next): the window in which
        a delivered message has no committed outcome stays about TXN_LINGER plus one
        transaction long."""
        while True:
            await self._commit_wanted.wait()
            await asyncio.sleep(TXN_LINGER)  # gather more outcomes into the transaction
            self._commit_wanted.clear()
            try:
                await self._flush()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - fenced: nothing more may be written
                os._exit(3)

    async def _tick_loop(self) -> None:
        """Locks end by themselves: re-check blocked lanes and paused partitions."""
        while True:
            await asyncio.sleep(0.2)
            now = time.time()
            for lane in list(self.lanes.values()):
                lane.refresh()
                self._park_held(lane, now)
                if lane.queue and lane.workers == 0:
                    self._kick(lane)
            self._flow_control()

    # -- heartbeats --------------------------------------------------------------------------
    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            try:
                await self._publish_stats()
            except Exception as e:  # noqa: BLE001 - stats are best effort
                log.debug("stats not published: %s", e)

    async def _publish_stats(self, stopping: bool = False) -> None:
        now = time.time()
        isps: dict[str, IspLoad] = {}
        for lane in self.lanes.values():
            cur = isps.setdefault(lane.isp, IspLoad())
            cur.backlog += len(lane.queue)
            cur.in_flight += lane.in_flight
            cur.connections += sum(lane.conns.values())
            cur.delivered += lane.delivered
            cur.attempts += lane.attempts
            cur.rate = round(cur.rate + lane.messages_per_tact(), 3)
            cur.paused = lane.blocked_until(now) is not None
        stats = NodeStats(node=self.node, partitions=sorted(tp.partition for tp in self.trackers),
                          isps=isps, delivered_total=self.delivered,
                          attempts_total=self.attempts, started_at=self.started_at,
                          timestamp=now, stopping=stopping)
        await self.stats_producer.send_and_wait(self.c.topic("nodes"), stats.to_json(),
                                                key=self.node.encode())


async def lane_connect(transport: Transport, env: Envelope, ip: str | None, sending) -> object:  # noqa: ANN001
    return await transport.connect(env.mx, ip, sending.connect_timeout, sending.tls,
                                   env.tls_policy)

