"""Turns received mail (inbound topic) into feedback: results events, suppression records,
dead letters. Runs in a consumer group, so several ``kmta inbound`` processes share the
partitions; offsets are committed after the records are written (at least once)."""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer

from kmta.config import Config
from kmta.pipeline.feedback import dead_letter, feedback_outs, recipient_domain
from kmta.pipeline.feedbackisp import FeedbackIsps
from kmta.pipeline.kafkaio import client_options, stop_loop
from kmta.pipeline.metrics import UNEXPECTED_ERRORS
from kmta.pipeline.outputs import Out, write
from kmta.policy.classify import Classifier
from kmta.policy.inbound import Feedback, Ignored, Unreadable, read
from kmta.policy.kb import KnowledgeBase
from schemas import InboundMail

log = logging.getLogger(__name__)

__all__ = ["Processor", "Read"]


class Record(Protocol):
    """What the processor reads of a consumed record (aiokafka's ConsumerRecord)."""

    @property
    def value(self) -> bytes | None: ...
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


@dataclass
class Read:
    """One inbound record read: the feedback it holds, the dead letters it made."""

    feedback: list[Feedback] = field(default_factory=list)
    dead: list[Out] = field(default_factory=list)
    received_at: float | None = None


class Processor:
    def __init__(self, config: Config, kb: KnowledgeBase, classifier: Classifier,
                 producer: Any, node: str, isps: FeedbackIsps) -> None:
        self._c = config
        self._kb = kb
        self._isps = isps
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

    def read_record(self, value: bytes | None, topic: str, partition: int, offset: int,
                    now: float) -> Read:
        """What one inbound record holds: its feedback, and dead letters for what could not
        be read (pure apart from the clock given)."""
        try:
            mail = InboundMail.model_validate_json(value or b"")
            raw = mail.raw()
        except ValueError as e:
            self.counts["dead_letter"] += 1
            return Read(dead=[dead_letter(self._c, f"inbound record unreadable: {e}",
                                          value or b"", topic, partition, offset, now)])
        got = Read(received_at=mail.received_at)
        for rcpt in mail.rcpt:
            v = read(raw, rcpt, self._classifier, self._verp, self._unsub,
                     self._c.inbound.unsubscribe_local, self._ours)
            if isinstance(v, Feedback):
                self.counts[v.kind] += 1
                got.feedback.append(v)
            elif isinstance(v, Unreadable):
                self.counts["dead_letter"] += 1
                got.dead.append(dead_letter(self._c, f"inbound mail to {rcpt}: {v.reason}", raw,
                                            topic, partition, offset, now))
            else:
                assert isinstance(v, Ignored)
                self.counts["ignored"] += 1
                log.info("inbound mail to %s from %r ignored: %s", rcpt, mail.mail_from,
                         v.reason)
        return got

    async def outs_for(self, records: Sequence[Record], now: float) -> list[Out]:
        """The records a batch of inbound records makes. Each feedback event's ISP is its
        recipient domain's by MX (``kmta/pipeline/feedbackisp.py``), every distinct domain
        of the batch looked up once, all within the DNS timeout; a record whose handling
        fails is a dead letter."""
        got: list[tuple[Record, Read]] = []
        for r in records:
            try:
                got.append((r, self.read_record(r.value, r.topic, r.partition, r.offset, now)))
            except Exception as e:
                log.exception("inbound record %s/%s failed", r.partition, r.offset)
                got.append((r, Read(dead=[self._failed(r, e, now)])))
        domains = {recipient_domain(fb) for _, one in got for fb in one.feedback}
        try:
            isps = await self._isps.resolve(domains)
        except Exception:  # a bug here must not stop the processor: the events keep
            log.exception("feedback ISP lookup failed")  # their fallback ISP
            UNEXPECTED_ERRORS.labels("inbound", "isp").inc()
            isps = {}
        outs: list[Out] = []
        for r, one in got:
            try:
                made = [o for fb in one.feedback for o in feedback_outs(
                    self._c, self._kb, fb, now, self._node, one.received_at,
                    isps.get(recipient_domain(fb)))]
            except Exception as e:
                log.exception("inbound record %s/%s failed", r.partition, r.offset)
                made = [self._failed(r, e, now)]
            outs += made + one.dead
        return outs

    def _failed(self, r: Record, e: Exception, now: float) -> Out:
        return dead_letter(self._c, f"processing failed: {e}", r.value or b"", r.topic,
                           r.partition, r.offset, now)

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
            outs = await self.outs_for([r for records in batch.values() for r in records],
                                       time.time())
            await write(self._producer, outs)
            await c.commit()

    async def stop(self) -> None:
        await stop_loop(self._task, self._consumer)
