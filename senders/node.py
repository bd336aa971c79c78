"""A sender node: one member of the senders' consumer group on the queue topic.

It owns SMTP connections and enforces the brain's decisions. This module wires the rooms of the
sender together and publishes its heartbeats:

- ``intake``: consuming, rebalances, flow control, parking;
- ``lanes``/``lane``: the brain's states and the ISP's rule per lane;
- ``dispatch``: connection slots, pacing, the delivery loop (``kmta.policy.verdict`` decides);
- ``checkpoint``: outcomes and queue offsets written together in Kafka transactions, so a
  crash loses nothing and repeats no committed outcome;
- ``transport``: the one seam to SMTP.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from typing import Any

from aiokafka import AIOKafkaConsumer

from kmta.config import Config
from kmta.pipeline.fencing import TXN_TIMEOUT_MS
from kmta.pipeline.health import Health
from kmta.pipeline.kafkaio import FETCH, CompactedView, Rebalance, client_options, make_producer
from kmta.policy.classify import Classifier
from kmta.policy.kb import KnowledgeBase
from kmta.policy.partitions import PartitionMap
from schemas import IspLoad, IspState, NodeStats
from senders.checkpoint import Checkpoint
from senders.dispatch import Dispatcher
from senders.intake import Intake
from senders.lanes import Lanes
from senders.observe import Observer
from senders.records import Records
from senders.suspension import Suspension
from senders.transport import SmtpTransport, Transport

log = logging.getLogger(__name__)

__all__ = ["SenderNode"]

TICK = 0.2  # seconds between re-checks of blocked lanes and paused partitions
STATS_EVERY = 2.0  # seconds between heartbeats on the nodes topic
DRAIN_TIMEOUT = 30.0  # seconds a stop waits for in-flight deliveries to be written


class SenderNode:
    def __init__(self, config: Config, kb: KnowledgeBase, pmap: PartitionMap,
                 transport: Transport | None = None, node: str | None = None,
                 health: Health | None = None) -> None:
        self.c = config
        self.node = node or config.sender.node or f"{socket.gethostname()}-{os.getpid()}"
        transport = transport or SmtpTransport(
            config.delivery.smtp_port, config.delivery.helo_name,
            config.delivery.allowed_networks, config.delivery.tls, config.delivery.tls_ca_file,
            config.delivery.allow_special, config.delivery.pipelining)
        self.consumer: AIOKafkaConsumer | None = None
        self.states = CompactedView(config, config.topic("state"), IspState.model_validate_json,
                                    self._state_changed)
        self.checkpoint = Checkpoint(f"{config.kafka.topic_prefix}senders", self._assignment)
        self.lanes = Lanes(config, kb, pmap, self.states.values, self.checkpoint.owned)
        records = Records(config, self.node)
        classifier = Classifier.load()
        self.suspension = Suspension(config, config.topic("queue"), classifier, random.Random(),
                                     self.node, self.checkpoint.write)
        self.dispatch = Dispatcher(transport, classifier, records, self.checkpoint.write,
                                   config.topic("queue"), lambda isp: kb.effective(isp).retry,
                                   self.suspension, self.checkpoint.owned)
        self.intake = Intake(config, pmap, self.lanes, self.checkpoint, records,
                             self.dispatch.kick, self.busy, suspension=self.suspension)
        self.started_at = time.time()
        self.observer = Observer(self, health or Health("sender"))  # metrics, /readyz

    def _txn_producer(self) -> Any:
        # compressed as every producer ([kafka] compression): results and envelopes of
        # retries and parks (100 KB bodies) go through it. The second final events once blamed
        # on lz4 here came from outcomes written after their partition was revoked (a
        # delivery outliving REVOKE_GRACE: slower on a loaded machine), now dropped
        # (Checkpoint.write)
        return make_producer(
            self.c, linger_ms=20, transactional_id=f"{self.c.kafka.topic_prefix}sender.{self.node}",
            transaction_timeout_ms=TXN_TIMEOUT_MS)

    def busy(self) -> int:
        """Messages taken and not finished: being delivered, or waiting for their write."""
        return self.dispatch.delivering + self.checkpoint.unwritten

    def _assignment(self) -> set:
        return self.consumer.assignment() if self.consumer is not None else set()

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        observer = asyncio.create_task(self.observer.run())  # reports from the start on
        # outcomes and queue offsets are written together in Kafka transactions (a longer
        # linger batches outcomes into fewer produce requests: less broker and worker CPU per
        # message); node heartbeats go on a plain producer, outside them
        self.checkpoint.new_producer = self._txn_producer
        producer = self._txn_producer()
        await producer.start()
        self.checkpoint.producer = producer
        stats_producer = make_producer(self.c)
        await stats_producer.start()
        await self.states.start()
        await asyncio.wait_for(self.states.ready.wait(), 60)
        self.consumer = AIOKafkaConsumer(
            **client_options(self.c),
            group_id=self.checkpoint.group, client_id=self.node,
            enable_auto_commit=False, auto_offset_reset="earliest",
            # workers route in transactions (streams/ingest.py): an aborted batch is never sent
            isolation_level="read_committed",
            max_poll_records=500, fetch_max_wait_ms=100, fetch_min_bytes=64 * 1024, **FETCH,
            session_timeout_ms=15000, heartbeat_interval_ms=3000,
            max_poll_interval_ms=300000)
        self.intake.consumer = self.consumer
        self.consumer.subscribe([self.intake.topic],
                                listener=Rebalance(self.intake.revoked, self.intake.assigned))
        await self.consumer.start()
        bg = [asyncio.create_task(self.checkpoint.run()), asyncio.create_task(self._tick_loop()),
              asyncio.create_task(self._stats_loop(stats_producer))]
        try:
            while not stop.is_set():
                batch = await self.consumer.getmany(timeout_ms=200)
                for tp, records in batch.items():
                    for r in records:
                        self.intake.accept_or_dead_letter(tp, r)
                self.intake.flow_control()
        finally:
            await self._drain(DRAIN_TIMEOUT)
            for t in bg:
                t.cancel()
            observer.cancel()
            await asyncio.gather(*bg, observer, return_exceptions=True)
            await self.checkpoint.flush()
            await self._publish_stats(stats_producer, stopping=True)
            await self.consumer.stop()
            await self.states.stop()
            if self.checkpoint.producer is not None:  # renewed after a fence: the current one
                await self.checkpoint.producer.stop()
            await stats_producer.stop()

    async def _drain(self, timeout: float) -> None:
        """Stop taking new messages; let in-flight deliveries finish and be written."""
        await self.dispatch.stop()
        for lane in self.lanes:
            lane.keep([])
        deadline = time.monotonic() + timeout
        while self.busy() > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def _state_changed(self, key: str, st: object) -> None:
        if not isinstance(st, IspState):
            return
        now = time.time()
        for lane, clears in self.lanes.apply(st, now):
            if clears:
                self.intake.cancel_cleared(lane, now)
            self.intake.park_holds(lane, now)
            self.dispatch.kick(lane)

    async def _tick_loop(self) -> None:
        """Locks end by themselves: re-check blocked lanes and paused partitions."""
        while True:
            await asyncio.sleep(TICK)
            now = time.time()
            for lane in self.lanes:
                lane.refresh()
                self.intake.park_held(lane, now)
                if lane.queue and lane.workers == 0:
                    self.dispatch.kick(lane)
            self.intake.flow_control()
            await self._skip_markers()

    async def _skip_markers(self) -> None:
        """Commit points of drained partitions move past the transaction markers behind
        their last record (``OffsetTracker.skip_to``)."""
        c = self.consumer
        if c is None:
            return
        owned = c.assignment()
        for tp, point in self.checkpoint.idle():
            if tp not in owned:
                continue
            stable = c.last_stable_offset(tp)  # of the last fetch; None before one
            if point is not None and stable is not None and point >= stable:
                continue  # nothing past the commit point: the usual case, no position asked
            try:  # known at once once read from; never wait for a position here
                position = await asyncio.wait_for(c.position(tp), 0.05)
            except Exception:  # noqa: BLE001 - given away meanwhile, or no position yet
                continue
            self.checkpoint.skip_to(tp, position)

    # -- heartbeats --------------------------------------------------------------------------
    async def _stats_loop(self, producer) -> None:
        while True:
            await asyncio.sleep(STATS_EVERY)
            try:
                await self._publish_stats(producer)
            except Exception as e:  # noqa: BLE001 - stats are best effort
                log.debug("stats not published: %s", e)

    def stats(self, stopping: bool = False) -> NodeStats:
        """This node's heartbeat: partitions and, per ISP, backlog, connections, rate."""
        now = time.time()
        isps: dict[str, IspLoad] = {}
        for lane in self.lanes:
            cur = isps.setdefault(lane.isp, IspLoad())
            cur.backlog += len(lane.queue)
            cur.in_flight += lane.delivering
            cur.connections += sum(lane.conns.values())
            cur.delivered += lane.delivered
            cur.attempts += lane.attempts
            if lane.slots:  # a lane of no owned partition sends nothing from this node
                cur.rate = round(cur.rate + lane.messages_per_tact(), 3)
            # any lane of the ISP held back (a lock or pause of the ISP, of one pool, of all
            # a pool's IPs): its backlog waits. Not the last lane's word for all of them
            cur.paused = cur.paused or lane.blocked_until(now) is not None
        return NodeStats(node=self.node, partitions=sorted(self.checkpoint.owned()), isps=isps,
                         delivered_total=self.dispatch.delivered,
                         attempts_total=self.dispatch.attempts, started_at=self.started_at,
                         timestamp=now, stopping=stopping)

    async def _publish_stats(self, producer, stopping: bool = False) -> None:
        await producer.send_and_wait(self.c.topic("nodes"), self.stats(stopping).to_json(),
                                     key=self.node.encode())
