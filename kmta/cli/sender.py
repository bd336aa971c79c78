"""``kmta sender``: a sender node process. It loads no faust (tests/unit/test_layers.py)."""
from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable

from kmta.config import Config
from kmta.pipeline.health import Health, serving
from kmta.pipeline.kafkaio import ensure_topics
from kmta.pipeline.metrics import known_isps
from kmta.pipeline.rules import load_kb, partition_map
from senders.node import SenderNode

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    config: Config = args.config_obj
    health = Health("sender")
    with serving(config.metrics.listen, health):  # /healthz answers while topics are made
        asyncio.run(ensure_topics(config))
        kb = load_kb(config)
        known_isps(kb.isp_names())
        node = SenderNode(config, kb, partition_map(config, kb), node=args.node, health=health)
        print(f"sender {node.node} delivering (allowed networks: "
              f"{', '.join(config.delivery.allowed_networks)}; special-use ranges opened: "
              f"{', '.join(config.delivery.allow_special) or 'none'})", flush=True)
        _run_until_signal(node.run)
    return 0


def _run_until_signal(coro_factory: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await coro_factory(stop)
    asyncio.run(runner())
