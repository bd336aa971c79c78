"""The processes: ``kmta inbound`` (receiver + processor) and ``kmta unsubscribe``."""
from __future__ import annotations

import asyncio
import logging
import os
import socket

from aiohttp import web

from inbound.processor import Processor
from inbound.receiver import Receiver
from inbound.web import make_app
from kmta.config import Config
from kmta.pipeline.feedbackisp import FeedbackIsps
from kmta.pipeline.health import Health, KafkaProbe, watch
from kmta.pipeline.kafkaio import ensure_topics, make_producer
from kmta.pipeline.lag import Lag
from kmta.pipeline.resolver import Resolver
from kmta.pipeline.rules import load_kb
from kmta.policy.classify import Classifier
from kmta.policy.kb import KnowledgeBase

log = logging.getLogger(__name__)

__all__ = ["feedback_isps", "node_name", "run_inbound", "run_unsubscribe"]


def feedback_isps(config: Config, kb: KnowledgeBase) -> FeedbackIsps:
    """Feedback recipients' ISPs by MX through the configured nameservers, each batch's
    lookups within ``[dns] timeout`` together."""
    return FeedbackIsps(kb, Resolver(config.dns), config.dns.timeout)


def node_name(config: Config, given: str | None, kind: str) -> str:
    return given or f"{kind}-{socket.gethostname()}-{os.getpid()}"


async def run_inbound(config: Config, node: str, stop: asyncio.Event, *, receive: bool = True,
                      process: bool = True, ready: asyncio.Event | None = None,
                      health: Health | None = None) -> None:
    """Receive (SMTP) and/or process (inbound topic -> results) until ``stop`` is set;
    ``health`` gets the reports (Kafka reachable, listening, the processor's partitions)."""
    health = health or Health("inbound")
    listening = asyncio.Event()
    await ensure_topics(config)
    producer = make_producer(config)
    await producer.start()
    receiver = Receiver(config, producer, node) if receive else None
    processor = None
    if process:
        kb = load_kb(config)
        processor = Processor(config, kb, Classifier.load(), producer, node,
                              feedback_isps(config, kb))
    probe = KafkaProbe.of(producer)
    prefix = config.kafka.topic_prefix
    lag = Lag(f"{prefix}inbound", lambda: processor.consumer if processor else None)

    async def checks() -> dict[str, str]:
        failing = await probe.failing()
        if receiver and not listening.is_set():
            failing["listen"] = "the SMTP receiver is not listening yet"
        if processor and not (processor.consumer and processor.consumer.assignment()):
            failing["partitions"] = "no inbound partitions assigned (joining the group, or " \
                "more processors than partitions)"
        return failing
    watching = asyncio.create_task(watch(health, checks, (lag.refresh,)))
    try:
        if receiver:
            await receiver.start()
            listening.set()
        if processor:
            await processor.start()
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        lag.clear()
        if receiver:
            await receiver.stop()
        if processor:
            await processor.stop()
        await producer.stop()


async def run_unsubscribe(config: Config, node: str, stop: asyncio.Event,
                          ready: asyncio.Event | None = None,
                          health: Health | None = None) -> None:
    health = health or Health("unsubscribe")
    listening = asyncio.Event()
    await ensure_topics(config)
    producer = make_producer(config)
    await producer.start()
    probe = KafkaProbe.of(producer)

    async def checks() -> dict[str, str]:
        failing = await probe.failing()
        if not listening.is_set():
            failing["listen"] = "the HTTP server is not listening yet"
        return failing
    watching = asyncio.create_task(watch(health, checks))
    kb = load_kb(config)
    runner = web.AppRunner(make_app(config, kb, producer, node, feedback_isps(config, kb)),
                           access_log=None)
    await runner.setup()
    host, port = config.unsubscribe.address()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
        listening.set()
        log.info("kmta unsubscribe: HTTP on %s:%s", host, port)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await runner.cleanup()
        await producer.stop()
