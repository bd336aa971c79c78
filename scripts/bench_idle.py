#!/usr/bin/env python3
"""What kmta costs with nothing to do: the CPU per second of the Kafka broker, the worker and
the senders while a deployment is connected and idle (fetch polls, heartbeats, timers).

A broker of its own (or ``--bootstrap``), then, round by round and one at a time, each tree's
deployment (this one, ``kmta``, and every ``--compare LABEL=PATH``; ``scripts/bench.py``'s
``KmtaRun``: a worker and ``--senders`` senders, a fresh topic prefix each time) is started,
left ``--settle`` seconds (start-up work, the JIT), measured for ``--seconds`` and stopped.
Before the first round the broker is measured alone (its own housekeeping: KRaft, log cleaner).
With ``--together`` the deployments are then measured once more, all connected at once (what
``scripts/bench.py`` measures as the idle rate: every variant stays up).

    python scripts/bench_idle.py --compare main=/work/main --rounds 2

Printed per deployment and round: CPU % of a core of the broker JVM (and above the broker
alone), the worker and each sender; the load average at the end of each measurement.

``--reaction N``: how soon a compacted view (``CompactedView``, as the senders read the state
topic: the lock, pause and speed path) sees a record written while it waits in an idle fetch,
for a fetch wait of 100 ms (aiokafka's default, kmta's before) and of ``VIEW_WAIT_MS``: N
records, 0.3-1.5 s apart, from ``send`` to the view's ``on_change`` (p50, p90, max).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import ROOT, KmtaRun

from kmta.config import Config
from kmta.pipeline.kafkaio import (
    VIEW_WAIT_MS,
    CompactedView,
    TopicSpec,
    client_options,
    make_producer,
    new_topic,
)
from ops.kit import (
    CpuMeter,
    Procs,
    broker_pid,
    clean_up,
    free_port,
    interrupt_on_signals,
    kafka_for,
    log,
)


def rates(pids: dict[str, list[int]], seconds: float) -> dict[str, float]:
    """CPU seconds per second of each named process group over ``seconds``."""
    meter = CpuMeter(pids)
    meter.start()
    t0 = time.monotonic()
    time.sleep(seconds)
    spent = meter.stop()
    elapsed = time.monotonic() - t0
    return {k: v / elapsed for k, v in spent.items()}


async def reaction(bootstrap: str, wait_ms: int, n: int) -> list[float]:
    """Seconds from ``send`` to ``on_change`` of a view waiting ``wait_ms`` in idle fetches,
    for ``n`` records written at random moments (a fresh compacted topic)."""
    from aiokafka.admin import AIOKafkaAdminClient
    cfg = Config.model_validate({"kafka": {"bootstrap_servers": bootstrap,
                                           "topic_prefix": f"idle{uuid.uuid4().hex[:8]}."}})
    topic = cfg.topic("reaction")
    admin = AIOKafkaAdminClient(**client_options(cfg))
    await admin.start()
    try:
        await admin.create_topics([new_topic(cfg, TopicSpec(topic, 8, compacted=True))])
    finally:
        await admin.close()
    seen: dict[str, float] = {}
    arrived = asyncio.Event()

    def on_change(key: str, value: object | None) -> None:
        seen[key] = time.monotonic()
        arrived.set()
    view = CompactedView(cfg, topic, bytes, on_change, wait_ms=wait_ms)
    producer = make_producer(cfg, linger_ms=0)
    await producer.start()
    await view.start()
    out = []
    try:
        await asyncio.wait_for(view.ready.wait(), 30)
        rng = random.Random(7)
        for i in range(n):
            await asyncio.sleep(rng.uniform(0.3, 1.5))  # the view is in a held fetch
            arrived.clear()
            key = f"k{i}"
            t0 = time.monotonic()
            await producer.send(topic, b"v", key=key.encode(), partition=i % 8)
            while key not in seen:
                await asyncio.wait_for(arrived.wait(), 10 + wait_ms / 1000)
                arrived.clear()
            out.append(seen[key] - t0)
    finally:
        await view.stop()
        await producer.stop()
    return out


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def line(label: str, r: dict[str, float], alone: float | None) -> str:
    broker = r.get("kafka JVM")
    parts = [f"broker {broker * 100:5.1f} %"] if broker is not None else []
    if broker is not None and alone is not None:
        parts.append(f"(+{(broker - alone) * 100:5.1f} above alone)")
    parts += [f"{k} {v * 100:4.1f} %" for k, v in r.items() if k != "kafka JVM"]
    kmta = sum(v for k, v in r.items() if k != "kafka JVM")
    return f"{label:>12}: " + "  ".join(parts) + f"  | kmta procs {kmta * 100:4.1f} %"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compare", action="append", default=[], metavar="LABEL=PATH",
                   help="also measure kmta from another checkout")
    p.add_argument("--senders", type=int, default=2)
    p.add_argument("--settle", type=float, default=20.0, metavar="S",
                   help="seconds after a deployment started before it is measured")
    p.add_argument("--seconds", type=float, default=30.0, metavar="S",
                   help="seconds measured per deployment and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--together", action="store_true",
                   help="also measure all deployments connected at once")
    p.add_argument("--reaction", type=int, default=0, metavar="N",
                   help="also measure a view's reaction to N records, 100 ms and VIEW_WAIT_MS")
    p.add_argument("--bootstrap", help="use this Kafka cluster instead of starting a broker")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    interrupt_on_signals()
    base = Path(tempfile.mkdtemp(prefix="kmta-idle-"))
    logdir = base / "logs"
    logdir.mkdir()
    procs = Procs(logdir)
    broker_data: Path | None = None
    variants = [("kmta", ROOT)] + [(lbl, Path(p).resolve()) for lbl, _, p in
                                   (c.partition("=") for c in args.compare)]
    out: dict[str, Any] = {"rounds": []}
    try:
        bootstrap, broker_data = kafka_for(args.bootstrap, base)
        others = {"kafka JVM": [broker_pid(broker_data) or 0]} if broker_data else {}
        alone = None
        if others:
            time.sleep(args.settle)
            alone = rates(others, args.seconds)["kafka JVM"]
            log(f"broker alone: {alone * 100:.1f} % (load {load()})")
            out["broker_alone"] = alone
        n = 0

        def deployment(label: str, root: Path) -> KmtaRun:
            nonlocal n
            n += 1  # a fresh directory and topic prefix per start
            run = KmtaRun(f"{label}-{n}", root, bootstrap, base, procs, free_port(),
                          free_port(), args.senders, None)
            run.start()
            return run

        for rnd in range(args.rounds):
            for label, root in variants:
                run = deployment(label, root)
                try:
                    time.sleep(args.settle)
                    procs.check(run.names)
                    r = rates({**{k: [p] for k, p in run.pids().items()}, **others},
                              args.seconds)
                    procs.check(run.names)
                finally:
                    run.stop()
                print(line(f"{label} r{rnd + 1}", r, alone) + f"  (load {load()})", flush=True)
                out["rounds"].append({"label": label, "round": rnd + 1, "cpu_per_s": r,
                                      "load": load()})
        if args.together:
            runs = [deployment(label, root) for label, root in variants]
            try:
                time.sleep(args.settle)
                pids = {f"{run.label.rsplit('-', 1)[0]}.{k}": [p]
                        for run in runs for k, p in run.pids().items()}
                r = rates({**pids, **others}, args.seconds)
            finally:
                for run in runs:
                    run.stop()
            print(line("together", r, alone) + f"  (load {load()})", flush=True)
            out["together"] = {"cpu_per_s": r, "load": load()}
        for wait in [100, VIEW_WAIT_MS] if args.reaction else []:
            lat = sorted(asyncio.run(reaction(bootstrap, wait, args.reaction)))
            p90 = lat[int(0.9 * (len(lat) - 1))]
            print(f"view reaction, fetch wait {wait} ms: p50 {statistics.median(lat) * 1000:.1f}"
                  f" ms, p90 {p90 * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms "
                  f"({len(lat)} records, load {load()})", flush=True)
            out.setdefault("reaction", {})[wait] = lat
        if args.json:
            args.json.write_text(json.dumps(out, indent=2))
    except KeyboardInterrupt:
        print("bench_idle: interrupted", file=sys.stderr)
        return 130
    finally:
        clean_up(procs, None, broker_data, base, args.keep)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
