"""``kmta worker``: a brain worker process (the faust app of ``streams``)."""
from __future__ import annotations

import argparse
import asyncio

import faust

from kmta.config import Config
from kmta.pipeline.dkim import load_keys
from kmta.pipeline.health import Health, serving
from kmta.pipeline.kafkaio import ensure_topics
from kmta.pipeline.metrics import known_isps
from kmta.pipeline.rules import load_kb
from streams.app import build

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    config: Config = args.config_obj
    if args.name:
        config = config.model_copy(update={"worker": config.worker.model_copy(
            update={"name": args.name})})
    load_keys(config.domains)  # a bad DKIM key is a config error now, before any connection
    health = Health("worker")
    with serving(config.metrics.listen, health):  # /healthz answers while topics are made
        asyncio.run(ensure_topics(config))
        kb = load_kb(config)
        known_isps(kb.isp_names())
        app = build(config, kb, health)
        worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
        worker.execute_from_commandline()
    return 0
