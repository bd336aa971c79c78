#!/usr/bin/env python3
"""``make bench-soak``: kmta's memory while a large queue builds up and drains.

One kmta deployment (a worker, ``--senders`` senders; ``scripts/bench.py``'s ``KmtaRun``: the
same broker of its own, smtp-sink, simulated DNS and rules without pacing) goes through two
phases, the same processes in both:

1. ``--small`` (10,000) messages of ``--size`` (2 KB) bytes, then
2. ``--messages`` (1,000,000) of them.

In each phase the four known ISPs the messages go to (gmail, yahoo, outlook, mailru: each has
queue partitions of its own) are first paused with ``kmta pause ISP`` (the control topic, as an
operator does it), the messages are produced to the outbox and the worker routes them all into
the queue topic while the senders run but send nothing; then ``kmta resume ISP`` and the queue
drains into the sink until every message has its final event.

Printed per phase: the routing rate (outbox -> queue), the drain rate (resume -> last final
event, and the sink's steady rate), RSS (VmRSS now, VmHWM peak) of the worker and each sender
with the whole phase queued and after its drain, and the broker's disk bytes per message (the
growth of its log dir, blocks actually allocated, by topic). Flat means the phase-2 peaks are
those of phase 1: nothing held per queued or per delivered message.

    python scripts/bench_soak.py                       # 10 k then 1 M x 2 KB (an hour or so)
    python scripts/bench_soak.py --small 2000 --messages 20000   # a short check
    python scripts/bench_soak.py --phases 10000,100000,300000    # three phases

The bench client keeps only a counter and the set of ids it has seen a final event for.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from bench import ROOT, SINK_IP, KmtaRun, make_docs
from bench_retries import rss_mb

from kmta.cli.control import send_command
from kmta.client import produce
from kmta.pipeline.control import make_command
from kmta.pipeline.kafkaio import client_options, topic_partitions
from ops.figures import steady_rate
from ops.kit import (
    Procs,
    Sink,
    clean_up,
    free_port,
    interrupt_on_signals,
    kafka_for,
    log,
    mx_zone,
    start_dns,
)
from schemas.control import ControlAction

SOAK_ISPS = {"gmail": "gmail.com", "yahoo": "yahoo.com", "outlook": "outlook.com",
             "mailru": "mail.ru"}
CHUNK = 20_000  # messages per produce call (the client holds one chunk's docs and futures)
BODIES = 256  # distinct bodies, cycled: repeats lie further apart than lz4's 64 KB window
_PROSE = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
         "incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud "
         "exercitation ullamco laboris nisi aliquip ex ea commodo consequat duis aute irure "
         "in reprehenderit voluptate velit esse cillum fugiat nulla pariatur excepteur sint "
         "occaecat cupidatat non proident sunt culpa qui officia deserunt mollit anim id est "
         "sale spring offer your order shipping free today only unsubscribe")
WORDS = _PROSE.split()


def bodies(size: int) -> list[str]:
    """Texts of about the length ``make_docs`` gives, of words in random order: they compress
    like prose (bench.py's one repeated line compresses 20-fold, which would flatter the
    broker's disk figure)."""
    want = len(make_docs(1, size, "x")[0]["text"])
    rng = random.Random(13)
    out = []
    for _ in range(BODIES):
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < want:
            words.append(rng.choice(WORDS))
        text = " ".join(words)[:want - 1]
        out.append("\n".join(text[i:i + 76] for i in range(0, len(text), 76)) + "\n")
    return out


def lz4_ratio(texts: list[str]) -> float:
    from aiokafka.codec import lz4_encode

    raw = "".join(texts).encode()
    return len(lz4_encode(raw)) / len(raw)


# -- control -------------------------------------------------------------------------------------
async def control(run: KmtaRun, action: ControlAction) -> None:
    """``kmta pause|resume ISP`` for every soak ISP at once: the same command on the control
    topic, each waited for until the worker's audit record says it is applied."""
    async def one(isp: str) -> None:
        cmd = make_command(action, isp, "bench-soak", reason="soak", now=time.time(),
                           secret=run.config.control.secret)
        for _ in range(3):  # on a busy machine the worker may answer after the wait: again
            audit = await send_command(run.config, cmd, 120)
            if audit is not None:
                break
        if audit is None or not audit.applied:
            raise RuntimeError(f"{action.value} {isp}: not applied "
                               f"({audit.error if audit else 'no audit record'})")

    await asyncio.gather(*(one(isp) for isp in SOAK_ISPS))


# -- figures -------------------------------------------------------------------------------------
def disk_by_topic(kafka_dir: Path) -> dict[str, int]:
    """Bytes the broker's log dirs take on disk (allocated blocks), by topic."""
    out: Counter[str] = Counter()
    for dirpath, _, files in os.walk(kafka_dir):
        part = Path(dirpath).name
        topic = part.rsplit("-", 1)[0] if part.rsplit("-", 1)[-1].isdigit() else "(other)"
        for f in files:
            try:
                out[topic] += os.stat(os.path.join(dirpath, f)).st_blocks * 512
            except OSError:
                pass
    return dict(out)


def memory(run: KmtaRun) -> dict[str, dict[str, float]]:
    return {name: dict(zip(("rss", "hwm"), rss_mb(pid), strict=True))
            for name, pid in run.pids().items()}


class Progress:
    """The route group's committed offsets against the outbox's end, and final events."""

    def __init__(self, run: KmtaRun) -> None:
        self.run = run
        self.c = AIOKafkaConsumer(**client_options(run.config))
        self.admin = AIOKafkaAdminClient(**client_options(run.config))
        self.results = AIOKafkaConsumer(**client_options(run.config), enable_auto_commit=False,
                                        fetch_max_wait_ms=100, isolation_level="read_committed")
        self.finals: set[str] = set()
        self.statuses: Counter[str] = Counter()

    async def __aenter__(self) -> Progress:
        await self.c.start()
        await self.admin.start()
        await self.results.start()
        self.outbox = await topic_partitions(self.run.config, [self.run.config.topic("outbox")])
        tps = await topic_partitions(self.run.config, [self.run.config.topic("results")])
        self.results.assign(tps)
        await self.results.seek_to_end(*tps)
        for tp in tps:
            await self.results.position(tp)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.results.stop()
        await self.c.stop()
        await self.admin.close()

    async def unrouted(self) -> int:
        ends = await self.c.end_offsets(self.outbox)
        got = await self.admin.list_consumer_group_offsets(
            f"{self.run.config.kafka.topic_prefix}route", partitions=self.outbox)
        return sum(max(0, end - max(0, got[tp].offset if tp in got else 0))
                   for tp, end in ends.items())

    async def poll(self, tag: str) -> None:
        batch = await self.results.getmany(timeout_ms=200, max_records=20_000)
        for records in batch.values():
            for r in records:
                ev = json.loads(r.value)
                if ev.get("final") and ev["id"].startswith(tag) and ev["id"] not in self.finals:
                    self.finals.add(ev["id"])
                    self.statuses[ev["status"]] += 1


# -- a phase -------------------------------------------------------------------------------------
async def phase(run: KmtaRun, sink: Sink, kafka_dir: Path | None, n: int, size: int,
                timeout: float) -> dict[str, Any]:
    tag = f"s{uuid.uuid4().hex[:6]}"
    out: dict[str, Any] = {"messages": n}
    async with Progress(run) as prog:
        await control(run, ControlAction.PAUSE)
        await asyncio.sleep(3)  # the senders read the paused state from the state topic
        disk0 = disk_by_topic(kafka_dir) if kafka_dir else {}
        _, sink0 = sink.counts()
        t0 = time.monotonic()
        domains = list(SOAK_ISPS.values())
        texts = bodies(size)
        out["body_lz4_ratio"] = lz4_ratio(texts)
        for start in range(0, n, CHUNK):
            docs = make_docs(min(CHUNK, n - start), size, f"{tag}-{start // CHUNK}", domains)
            for i, doc in enumerate(docs):
                doc["text"] = texts[i % BODIES]
            await produce(run.config, docs)
            del docs
            run.procs.check(run.names)
        out["produce_s"] = time.monotonic() - t0
        log(f"{n} produced in {out['produce_s']:.0f} s; routing ...")
        deadline = time.monotonic() + timeout
        last = 0.0
        while (left := await prog.unrouted()) > 0:
            run.procs.check(run.names)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{left} of {n} not routed after {timeout:.0f} s")
            if time.monotonic() - last > 60:
                last = time.monotonic()
                grown = sum(disk_by_topic(kafka_dir).values()) - sum(disk0.values()) if (
                    kafka_dir) else 0
                log(f"  {n - left}/{n} routed, {last - t0:.0f} s, {_mb(memory(run))}, "
                    f"broker disk +{grown / max(1, n - left):,.0f} B/msg routed")
            await asyncio.sleep(1)
        out["queued_s"] = time.monotonic() - t0
        await asyncio.sleep(5)  # the senders' lag gauges and intake settle on the full queue
        out["queued_memory"] = memory(run)
        out["sent_while_paused"] = sink.counts()[1] - sink0
        out["disk_queued"] = disk_by_topic(kafka_dir) if kafka_dir else {}
        out["disk_delta_queued"] = {k: v - disk0.get(k, 0)
                                    for k, v in out["disk_queued"].items()}
        log(f"queued in {out['queued_s']:.0f} s ({n / out['queued_s']:.0f}/s); "
            f"{out['sent_while_paused']} sent while paused; resuming ...")
        samples: list[tuple[float, int]] = []
        t1 = time.monotonic()
        await control(run, ControlAction.RESUME)
        last = 0.0
        while len(prog.finals) < n:
            await prog.poll(tag)
            now = time.monotonic()
            samples.append((now - t1, sink.counts()[1] - sink0 - out["sent_while_paused"]))
            run.procs.check(run.names)
            if now - t1 > timeout:
                raise RuntimeError(f"{n - len(prog.finals)} of {n} without a final event "
                                   f"after {timeout:.0f} s of draining")
            if now - last > 60:
                last = now
                log(f"  {len(prog.finals)}/{n} final, {now - t1:.0f} s, {_mb(memory(run))}")
        out["drain_s"] = time.monotonic() - t1
        out["drain_rate"] = n / out["drain_s"]
        out["steady_rate"] = steady_rate(samples, n)
        out["statuses"] = dict(prog.statuses)
        out["drained_memory"] = memory(run)
        out["disk_drained"] = disk_by_topic(kafka_dir) if kafka_dir else {}
    log(f"drained in {out['drain_s']:.0f} s ({out['drain_rate']:.0f}/s)")
    return out


def _mb(mem: dict[str, dict[str, float]]) -> str:
    """VmRSS/VmHWM per process, for progress lines."""
    return ", ".join(f"{k} {v['rss']:.0f}/{v['hwm']:.0f} MB" for k, v in mem.items())


def report(phases: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [f"kmta soak: {args.senders} senders, ~{args.size} B messages to "
             f"{', '.join(SOAK_ISPS)} (paused while queueing), {os.cpu_count()} CPUs, "
             f"load average {os.getloadavg()[0]:.1f}; body lz4 ratio "
             f"{phases[0].get('body_lz4_ratio', 0):.2f}", ""]
    w = 14
    lines.append(f"{'':<34}" + "".join(f"{p['messages']:>{w},}" for p in phases))
    rows: list[tuple[str, Any]] = [
        ("routed msg/s (produce -> queued)", lambda p: p["messages"] / p["queued_s"]),
        ("drain msg/s (resume -> finals)", lambda p: p["drain_rate"]),
        ("steady drain msg/s (sink)", lambda p: p["steady_rate"]),
        ("sent while paused", lambda p: p["sent_while_paused"]),
    ]
    for title, f in rows:
        lines.append(f"{title:<34}" + "".join(
            f"{'-' if f(p) is None else f'{f(p):,.0f}':>{w}}" for p in phases))
    for proc in phases[0]["queued_memory"]:
        for when in ("queued", "drained"):
            for k in ("rss", "hwm"):
                label = f"{proc} {'VmRSS' if k == 'rss' else 'VmHWM'} {when} MB"
                lines.append(f"{label:<34}" + "".join(
                    f"{p[f'{when}_memory'][proc][k]:>{w}.0f}" for p in phases))
    for p in phases:
        d = p["disk_delta_queued"]
        total = sum(d.values())
        per = ", ".join(f"{t.rsplit('.', 1)[-1]} {v / p['messages']:,.0f}"
                        for t, v in sorted(d.items(), key=lambda x: -x[1]) if v > 0)
        lines.append(f"broker disk, {p['messages']:,} queued: {total / p['messages']:,.0f} "
                     f"B/msg ({per})")
    lines.append("")
    for p in phases:
        lines.append(f"  {p['messages']:,} outcomes: {json.dumps(p['statuses'])}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench_soak.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=1_000_000, help="messages of the big phase")
    p.add_argument("--small", type=int, default=10_000, help="messages of the first phase")
    p.add_argument("--phases", help="messages per phase, comma-separated (instead of "
                   "--small and --messages), e.g. 10000,100000,300000")
    p.add_argument("--size", type=int, default=2048, help="bytes per composed message")
    p.add_argument("--senders", type=int, default=2, help="kmta sender processes")
    p.add_argument("--max-connections", type=int, default=8)
    p.add_argument("--bootstrap", help="use this Kafka cluster (no disk figures)")
    p.add_argument("--timeout", type=float, default=14_400, help="seconds per wait")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs)")
    p.add_argument("--tracemalloc", type=Path, metavar="DIR",
                   help="worker and senders write tracemalloc summaries here every 30 s "
                   "(ops/memtrace.py; slows them down)")
    p.add_argument("--env", action="append", default=[], metavar="PROC:KEY=VALUE",
                   help="an environment variable for one process only (worker, sender-1, "
                   "...), to compare a setting across the senders of one run; repeatable")
    return p.parse_args(argv)


def with_env(procs: Procs, extra: list[str]) -> None:
    """``procs.spawn`` adds each ``PROC:KEY=VALUE`` of ``extra`` to that process's
    environment."""
    by_proc: dict[str, dict[str, str]] = {}
    for item in extra:
        proc, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        by_proc.setdefault(proc, {})[key] = value
    spawn = procs.spawn

    def spawn_with(name: str, cmd: list[str], env: dict[str, str] | None = None,
                   cwd: Path | None = None) -> Any:
        more = by_proc.get(name.split(".", 1)[-1], {})
        return spawn(name, cmd, {**(env if env is not None else os.environ), **more}, cwd)

    procs.spawn = spawn_with  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    interrupt_on_signals()
    base = Path(tempfile.mkdtemp(prefix="kmta-soak-"))
    (base / "logs").mkdir()
    procs = Procs(base / "logs")
    with_env(procs, args.env)
    dns = None
    broker_data: Path | None = None
    run: KmtaRun | None = None
    try:
        bootstrap, broker_data = kafka_for(args.bootstrap, base)
        sink_port = free_port(SINK_IP)
        sink = Sink(procs, SINK_IP, sink_port)
        dns = start_dns(mx_zone({d: f"mx.{d}" for d in SOAK_ISPS.values()},
                                {f"mx.{d}": SINK_IP for d in SOAK_ISPS.values()}, ttl=3600))
        if args.tracemalloc:  # the processes inherit the environment
            os.environ["KMTA_TRACEMALLOC"] = str(args.tracemalloc.resolve())
        run = KmtaRun("soak", ROOT, bootstrap, base, procs, dns.port, sink_port, args.senders,
                      None, args.max_connections)
        log(f"starting worker + {args.senders} senders, dir {base} ...")
        run.start()
        phases = []
        sizes = ([int(x) for x in args.phases.split(",")] if args.phases
                 else [args.small, args.messages])
        for n in sizes:
            log(f"phase: {n} messages of ~{args.size} B")
            phases.append(asyncio.run(phase(run, sink, broker_data, n, args.size,
                                            args.timeout)))
            print(report(phases, args), flush=True)  # so far, should the big phase not end
            if args.json:
                args.json.write_text(json.dumps({"args": {k: str(v) for k, v in
                                                          vars(args).items()},
                                                 "phases": phases}, indent=2))
        return 0
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        if run is not None:
            run.stop()
        clean_up(procs, dns, broker_data, base, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
