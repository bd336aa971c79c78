"""Turns received mail (inbound topic) into feedback: results events, suppression records,
dead letters. Runs in a consumer group, so several ``kmta inbound`` processes share the
partitions; offsets are committed after the records are written (at least once)."""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaConsumer

from kmta.config import Config
from kmta.pipeline.feedback import dead_letter, feedback_outs
from kmta.pipeline.kafkaio import client_options, stop_loop
from kmta.pipeline.outputs import Out, write
from kmta.policy.classify import Classifier
from kmta.policy.inbound import Feedback, Ignored, Unreadable, read
from kmta.policy.kb import KnowledgeBase
from schemas import InboundMail

log = logging.getLogger(__name__)

__all__ = ["Processor"]


class Processor:
    def __init__(self, config: Config, kb: KnowledgeBase, classifier: Classifier,
                 producer: Any, node: str) -> None:
        self._c = config
        self._kb = kb
        self._classifier = classifier
        self._producer = producer
        self._node = node
        v = config.delivery.verp_secret
        u = config.unsubscribe.secret
        self._verp = v.get_secret_value().encode() if v else None
        self._unsub = u.get_secret_value().encode() if u else None
        self._ours = frozenset(d.name for d in config.domains)
        self.counts: Counter[str] = Counter()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None

    def outs_for(self, value: bytes | None, topic: str, partition: int, offset: int,
                 now: float) -> list[Out]:
        """The records one inbound record makes (pure apart from the clock given)."""
        try:
            mail = InboundMail.model_validate_json(value or b"")
            raw = mail.raw()
        except ValueError as e:
            self.counts["dead_letter"] += 1
            return [dead_letter(self._c, f"inbound record unreadable: {e}", value or b"",
                                topic, partition, offset, now)]
        outs: list[Out] = []
        for rcpt in mail.rcpt:
            v = read(raw, rcpt, self._classifier, self._verp, self._unsub,
                     self._c.inbound.unsubscribe_local, self._ours)
            if isinstance(v, Feedback):
                self.counts[v.kind] += 1
                outs += feedback_outs(self._c, self._kb, v, now, self._node, mail.received_at)
            elif isinstance(v, Unreadable):
                self.counts["dead_letter"] += 1
                outs.append(dead_letter(self._c, f"inbound mail to {rcpt}: {v.reason}", raw,
                                        topic, partition, offset, now))
            else:
                assert isinstance(v, Ignored)
                self.counts["ignored"] += 1
                log.info("inbound mail to %s from %r ignored: %s", rcpt, mail.mail_from,
                         v.reason)
        return outs

    @property
    def consumer(self) -> AIOKafkaConsumer | None:
        return self._consumer  # metrics and readiness read it

    async def start(self) -> None:
        c = AIOKafkaConsumer(self._c.topic("inbound"),
                             **client_options(self._c),
                             group_id=f"{self._c.kafka.topic_prefix}inbound",
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             session_timeout_ms=15000, heartbeat_interval_ms=3000,
                             fetch_max_wait_ms=200,
                             max_partition_fetch_bytes=self._c.delivery.max_message_bytes * 2
                             + 65536)
        await c.start()
        self._consumer = c
        self._task = asyncio.create_task(self._run(), name="inbound-processor")

    async def _run(self) -> None:
        assert self._consumer is not None
        c = self._consumer
        while True:
            batch = await c.getmany(timeout_ms=500, max_records=200)
            if not batch:
                continue
            now = time.time()
            outs: list[Out] = []
            for tp, records in batch.items():
                for r in records:
                    try:
                        outs += self.outs_for(r.value, tp.topic, tp.partition, r.offset, now)
                    except Exception as e:
                        log.exception("inbound record %s/%s failed", tp.partition, r.offset)
                        outs.append(dead_letter(self._c, f"processing failed: {e}",
                                                r.value or b"", tp.topic, tp.partition,
                                                r.offset, now))
            await write(self._producer, outs)
            await c.commit()

    async def stop(self) -> None:
        await stop_loop(self._task, self._consumer)
