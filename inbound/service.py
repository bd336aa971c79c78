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
from kmta.pipeline.kafkaio import ensure_topics, make_producer
from kmta.pipeline.rules import load_kb
from kmta.policy.classify import Classifier

log = logging.getLogger(__name__)

__all__ = ["node_name", "run_inbound", "run_unsubscribe"]


def node_name(config: Config, given: str | None, kind: str) -> str:
    return given or f"{kind}-{socket.gethostname()}-{os.getpid()}"


async def run_inbound(config: Config, node: str, stop: asyncio.Event, *, receive: bool = True,
                      process: bool = True, ready: asyncio.Event | None = None) -> None:
    """Receive (SMTP) and/or process (inbound topic -> results) until ``stop`` is set."""
    await ensure_topics(config)
    producer = make_producer(config)
    await producer.start()
    receiver = Receiver(config, producer, node) if receive else None
    processor = (Processor(config, load_kb(config), Classifier.load(), producer, node)
                 if process else None)
    try:
        if receiver:
            await receiver.start()
        if processor:
            await processor.start()
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        if receiver:
            await receiver.stop()
        if processor:
            await processor.stop()
        await producer.stop()


async def run_unsubscribe(config: Config, node: str, stop: asyncio.Event,
                          ready: asyncio.Event | None = None) -> None:
    await ensure_topics(config)
    producer = make_producer(config)
    await producer.start()
    runner = web.AppRunner(make_app(config, load_kb(config), producer, node),
                           access_log=None)
    await runner.setup()
    host, port = config.unsubscribe.address()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
        log.info("kmta unsubscribe: HTTP on %s:%s", host, port)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await runner.cleanup()
        await producer.stop()
