#!/usr/bin/env python3
"""``make bench-retries``: a million pending retries in the delay topics (issue #3).

Retries wait in the delay tier topics (``kmta/pipeline/deferral.py``, ``streams/delay.py``): the
worker's scheduler looks only at partition heads. On a broker of its own (or ``--bootstrap``) and
with real worker processes (``python -m kmta.cli worker``), this run measures:

1. **Idle cost**: deployment ``big`` holds ``--pending`` retries (1,000,000), ``small``
   ``--baseline`` (1,000), deferred just now with due times in a 3-5 h window (retry mode
   ``window``), written as ``park()`` writes them. Both workers idle side by side; their CPU
   over the same ``--idle`` seconds and their RSS are compared.
2. **Precision**: ``--sample`` more retries per deployment come due 30-90 s later. Each is
   written where the scheduler would hold it at that moment had it been deferred 3-5 h
   earlier and every hop been on time (a delay record with a past timestamp, in the same
   ISP-keyed tier partitions), so the sample runs the last hops of real retry chains.
   Lateness = when the scheduler wrote the message to the queue topic (its record timestamp),
   and when a consumer saw it there, minus its due time.
3. **Hop throughput**: ``--backlog`` records actionable at the same moment, once as releases
   (tier 30 s -> queue) and once as hops (tier 600 s -> tier 600 s): records per second and CPU
   per record (worker, broker).
4. **Steady state**: a fresh deployment holds ``--steady`` retries (default ``--pending``) as
   a steady flow would leave them (deferral ages spread over the window; each in the tier and
   with the timestamp its chain of hops gives it), so hops and releases come due at the
   steady-state rate while its worker runs alone for ``--steady-window`` seconds: moves/s, CPU,
   lateness of the releases. Next to it, the load the ``choose_tier`` chain predicts.

``--compare LABEL=PATH`` runs the same phases with a worker from another source tree (e.g. a
git worktree of the code before a change) for before/after figures from one run.
``--profile DIR`` runs the workers under cProfile (``KMTA_PROFILE``) and prints hot spots.

Not a test: the figures depend on the machine and its load. Everything is on loopback.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from kmta.config import Config, load_config
from kmta.pipeline.deferral import choose_tier, park
from kmta.pipeline.kafkaio import client_options, delay_topic, ensure_topics, topic_partitions
from kmta.policy.compose import compose
from kmta.policy.kb import KnowledgeBase
from ops.figures import late_figures
from ops.kit import (
    Procs,
    broker_pid,
    clean_up,
    cpu_seconds,
    interrupt_on_signals,
    kafka_for,
    mx_zone,
    profile_report,
    start_dns,
)
from schemas import Envelope, MxHost, OutboxMessage
from sim.dns import DnsServerThread

ROOT = Path(__file__).resolve().parent.parent

# recipient domains (share of messages) and their MX host, every one on loopback
DOMAINS = [("gmail.com", 30, "gmail-smtp-in.l.google.com"),
           ("yahoo.com", 12, "mta5.am0.yahoodns.net"),
           ("outlook.com", 8, "outlook-com.olc.protection.outlook.com"),
           ("hotmail.com", 8, "hotmail-com.olc.protection.outlook.com"),
           ("mail.ru", 8, "mxs.mail.ru"), ("icloud.com", 6, "mx01.mail.icloud.com"),
           ("yandex.ru", 6, "mx.yandex.ru"), ("gmx.net", 5, "mx00.emig.gmx.net"),
           ("shop-example.test", 9, "mx.shop-example.test"),
           ("news-example.test", 8, "mx.news-example.test")]
REPLIES = [(421, "421 4.7.0 [TSS04] Messages from 127.0.0.2 temporarily deferred due to "
                 "unexpected volume or user complaints"),
           (451, "451 4.7.1 Please try again later"),
           (421, "421 4.7.28 Our system has detected an unusual rate of unsolicited mail")]
Record = tuple[str, int, bytes, float | None]  # topic, partition, value, write time (None: now)


def log(msg: str) -> None:
    print(f"[bench-retries {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the retry chain, as park() and the scheduler walk it ----------------------------------------
def holding_record(tiers: list[float], due: float, deferred_at: float,
                   at: float) -> tuple[float, float] | None:
    """(write time, tier) of the delay record holding a retry deferred at ``deferred_at`` until
    ``due``, as of ``at``, had every hop been on time; None once it is released. A record is
    actionable at min(write time + tier, due) (``streams/delay.py``)."""
    t = deferred_at
    while True:
        rem = due - t
        if rem <= 0.05:
            return None
        tier = choose_tier(tiers, rem)
        nxt = min(t + tier, due)
        if nxt > at:
            return t, tier
        t = nxt


def chain(tiers: list[float], delay: float) -> list[tuple[float, float]]:
    """(tier, seconds held) for each record of a retry waiting ``delay`` seconds; the move out
    of the last record is the release to the queue, every other one a hop."""
    out, t = [], 0.0
    while delay - t > 0.05:
        tier = choose_tier(tiers, delay - t)
        nxt = min(t + tier, delay)
        out.append((tier, nxt - t))
        t = nxt
    return out


def model(tiers: list[float], window: tuple[float, float], pending: int,
          rng: random.Random) -> dict:
    """Moves per retry (hops + the release) over delays drawn from the window, and what a
    constant ``pending`` population implies (Little's law: retries/s = pending / mean delay)."""
    draws = [rng.uniform(*window) for _ in range(20000)]
    chains = [chain(tiers, d) for d in draws]
    held: dict[float, float] = {}
    for ch in chains:
        for tier, secs in ch:
            held[tier] = held.get(tier, 0.0) + secs
    total = sum(held.values())
    per_s = pending / statistics.fmean(draws)
    moves = statistics.fmean(len(ch) for ch in chains)
    return {"moves": moves, "moves_min": min(map(len, chains)),
            "moves_max": max(map(len, chains)), "retries_per_s": per_s,
            "hops_per_s": per_s * (moves - 1), "releases_per_s": per_s,
            "share": {t: held[t] / total for t in sorted(held)}}


def due_of(msg_id: str) -> float:
    """Bench ids carry the due time: ``<tag>-<due ms, hex>-<n>``."""
    return int(msg_id.split("-")[1], 16) / 1000.0


# -- envelopes ----------------------------------------------------------------------------------
class Maker:
    """Realistic deferred envelopes: composed bodies, several ISPs, MX answers, a last reply."""

    def __init__(self, kb: KnowledgeBase, size: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.domains = [d for d, _, _ in DOMAINS]
        self.weights = [w for _, w, _ in DOMAINS]
        self.mx = {d: [MxHost(host=m, pref=10, ips=[f"127.0.1.{i + 1}"])]
                   for i, (d, _, m) in enumerate(DOMAINS)}
        self.isp = {d: kb.isp_for(d, [m]) for d, _, m in DOMAINS}
        self.parts: dict[tuple[str, bytes | None], int] = {}
        self.n = 0
        self.bodies = [self._body(i, size) for i in range(64)]

    def _body(self, i: int, size: int) -> str:
        """A composed message whose envelope record is about ``size`` bytes (+-60)."""
        line = "Hello, here is this week's selection from our shop; click below to see more.\n"
        msg = OutboxMessage.model_validate({
            "from": "news@shop.kmta.test", "to": "user@example.test",
            "subject": f"Weekly selection #{i}", "text": line})
        want = size + self.rng.randint(-60, 60)
        text = line
        for _ in range(2):  # the record's size depends on the body's escaping: measure, adjust
            data = compose(msg.model_copy(update={"text": text}), f"bench-{i}", "kmta.test",
                           time.time())
            now = time.time()
            have = len(park(Config(), self.envelope(now, now + 1e4, "size", data),
                            now + 1e4, now).value)
            n = max(len(text) + want - have, len(line))
            text = (line * (n // len(line) + 1))[:n]
        return compose(msg.model_copy(update={"text": text}), f"bench-{i}", "kmta.test",
                       time.time())

    def envelope(self, deferred_at: float, due: float, tag: str,
                 data: str | None = None) -> Envelope:
        rng = self.rng
        self.n += 1
        domain = rng.choices(self.domains, self.weights)[0]
        accepted = deferred_at - rng.uniform(0, 1800)
        code, reply = rng.choice(REPLIES)
        return Envelope(
            id=f"{tag}-{int(due * 1000):x}-{self.n:08x}", sender="news@shop.kmta.test",
            rcpt=f"user{self.n}@{domain}", domain=domain, isp=self.isp[domain],
            data=data or rng.choice(self.bodies), campaign="weekly-42", accepted_at=accepted,
            routed_at=accepted, attempt=rng.randint(1, 3), expires_at=accepted + 5 * 86400,
            mx=self.mx[domain], mx_resolved_at=accepted, mx_ttl=3600.0, last_code=code,
            last_response=reply)

    def record(self, config: Config, env: Envelope, due: float, written_at: float) -> Record:
        """What ``park`` writes for ``env`` at ``written_at``, partitioned as the producer's
        default partitioner does by the ISP key."""
        out = park(config, env, due, written_at)
        key = (out.topic, out.key)
        part = self.parts.get(key)
        if part is None:
            part = self.parts[key] = (murmur2(out.key) & 0x7FFFFFFF) % config.kafka.partitions
        return out.topic, part, out.value, written_at


async def write(config: Config, records: Iterable[Record]) -> tuple[int, int]:
    """Produce records with a fast producer; (records, bytes)."""
    p = AIOKafkaProducer(**client_options(config), acks=1,
                         linger_ms=20, max_batch_size=1024 * 1024, enable_idempotence=False)
    await p.start()
    n = size = 0
    futs = []
    try:
        for topic, part, value, ts in records:
            ts_ms = int(ts * 1000) if ts is not None else None
            futs.append(await p.send(topic, value, partition=part, timestamp_ms=ts_ms))
            n += 1
            size += len(value)
            if len(futs) >= 20000:
                await asyncio.gather(*futs)
                futs = []
        await asyncio.gather(*futs)
    finally:
        await p.stop()
    return n, size


# -- a deployment ----------------------------------------------------------------------------------
@dataclass
class Deployment:
    """One kmta deployment (fresh topic prefix) whose worker runs from the tree ``root``."""

    label: str
    root: Path
    pending: int
    config: Config
    config_path: Path
    dir: Path
    pid: int | None = None
    figures: dict = field(default_factory=dict)

    @property
    def worker(self) -> str:
        return f"{self.label}.worker"

    @property
    def tiers(self) -> list[float]:
        return self.config.kafka.delay_tiers

    def start(self, procs: Procs, profile: Path | None) -> None:
        env = {**os.environ, "PYTHONPATH": str(self.root)}
        if profile is not None:
            env["KMTA_PROFILE"] = str(profile / self.label)
        cmd = [sys.executable, "-m", "kmta.cli", "--config", str(self.config_path), "worker",
               "--name", f"brain-{self.label}"]
        self.pid = procs.spawn(self.worker, cmd, env, self.dir).pid

    async def partitions(self, topics: list[str]) -> list[TopicPartition]:
        return await topic_partitions(self.config, topics)

    def delay_topics(self) -> list[str]:
        return [delay_topic(self.config, t) for t in self.tiers]


def deployment(label: str, root: Path, pending: int, base: Path, bootstrap: str,
               dns_port: int) -> Deployment:
    d = base / label
    d.mkdir(parents=True)
    cfg = {"data_dir": str(d / "data"),
           "kafka": {"bootstrap_servers": bootstrap,
                     "topic_prefix": f"br{uuid.uuid4().hex[:8]}."},
           "dns": {"nameservers": [f"127.0.0.1:{dns_port}"]},
           "delivery": {"allowed_networks": ["127.0.0.0/8"], "allow_special": ["127.0.0.0/8"],
                        "helo_name": "bench.kmta.test",
                        "unsigned": "allow"}}
    path = d / "kmta.toml"
    path.write_text(tomli_w.dumps(cfg))
    return Deployment(label, root, pending, load_config(path), path, d)


class Offsets:
    """End offsets and the scheduler group's committed offsets, on one long-lived client."""

    def __init__(self, config: Config) -> None:
        self.c = AIOKafkaConsumer(**client_options(config))
        self.admin = AIOKafkaAdminClient(**client_options(config))

    async def __aenter__(self) -> Offsets:
        await self.c.start()
        await self.admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.c.stop()
        await self.admin.close()

    async def ends(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return await self.c.end_offsets(tps)

    async def committed(self, dep: Deployment,
                        tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        got = await self.admin.list_consumer_group_offsets(
            f"{dep.config.kafka.topic_prefix}delay", partitions=tps)
        return {tp: (got[tp].offset if tp in got else -1) for tp in tps}


class QueueTail:
    """Reads queue topics from given offsets: (record timestamp, time seen) per message id."""

    def __init__(self, config: Config) -> None:
        self.c = AIOKafkaConsumer(**client_options(config), enable_auto_commit=False,
                                  fetch_max_wait_ms=50)
        self.seen: dict[str, tuple[float, float]] = {}
        self.task: asyncio.Task | None = None

    async def start(self, starts: dict[TopicPartition, int]) -> None:
        await self.c.start()
        self.c.assign(list(starts))
        for tp, off in starts.items():
            self.c.seek(tp, off)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self.c.getmany(timeout_ms=200)
            now = time.time()
            for recs in batch.values():
                for r in recs:
                    self.seen[json.loads(r.value)["id"]] = (r.timestamp / 1000.0, now)

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.c.stop()

    def lateness(self, prefix: str, since: float = 0.0,
                 until: float = float("inf")) -> tuple[list[float], list[float]]:
        """(written - due, seen - due) of the ids starting with ``prefix`` due in the range."""
        w, s = [], []
        for i, (ts, seen) in self.seen.items():
            if i.startswith(prefix):
                due = due_of(i)
                if since <= due < until:
                    w.append(ts - due)
                    s.append(seen - due)
        return w, s


async def tail_queues(deps: list[Deployment]) -> QueueTail:
    tail = QueueTail(deps[0].config)
    starts: dict[TopicPartition, int] = {}
    async with Offsets(deps[0].config) as off:
        for dep in deps:
            starts.update(await off.ends(await dep.partitions([dep.config.topic("queue")])))
    await tail.start(starts)
    return tail


def rss_mb(pid: int | None) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    out = {"VmRSS": 0.0, "VmHWM": 0.0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k = line.split(":")[0]
            if k in out:
                out[k] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out["VmRSS"], out["VmHWM"]


# -- the phases ----------------------------------------------------------------------------------
async def fill(dep: Deployment, maker: Maker, window: tuple[float, float]) -> float:
    """``dep.pending`` retries deferred now, due in the window; returns records/s written."""
    def records() -> Iterator[Record]:
        for _ in range(dep.pending):
            now = time.time()
            due = now + maker.rng.uniform(*window)
            topic, part, value, _ = maker.record(dep.config, maker.envelope(now, due, "far"),
                                                 due, now)
            yield topic, part, value, None

    t0 = time.monotonic()
    n, size = await write(dep.config, records())
    dt = time.monotonic() - t0
    dep.figures["record_bytes"] = size / max(n, 1)
    log(f"{dep.label}: {n:,} pending written in {dt:.0f} s ({n / dt:,.0f}/s, "
        f"{size / 1e6:,.0f} MB, {size / max(n, 1):,.0f} B each)")
    return n / dt


async def probe(deps: list[Deployment], maker: Maker, procs: Procs, timeout: float) -> None:
    """One retry due now per deployment; returns once every worker released its one."""
    tail = await tail_queues(deps)
    want = set()
    try:
        for dep in deps:
            now = time.time()
            env = maker.envelope(now, now, f"probe{dep.label}")
            want.add(env.id)
            await write(dep.config, [maker.record(dep.config, env, now, now)])
        deadline = time.monotonic() + timeout
        while not want <= tail.seen.keys():
            procs.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not release the probes in {timeout:.0f} s")
            await asyncio.sleep(0.2)
    finally:
        await tail.stop()


async def idle(deps: list[Deployment], seconds: float, broker: int | None) -> float:
    """Every worker's CPU % over the same window and its RSS; returns the broker's CPU %."""
    c0 = {d.label: cpu_seconds(d.pid) for d in deps}
    b0, t0 = cpu_seconds(broker), time.monotonic()
    await asyncio.sleep(seconds)
    dt = time.monotonic() - t0
    for d in deps:
        d.figures["idle_cpu_pct"] = (cpu_seconds(d.pid) - c0[d.label]) / dt * 100
        d.figures["idle_rss_mb"], d.figures["idle_hwm_mb"] = rss_mb(d.pid)
        log(f"{d.label}: idle CPU {d.figures['idle_cpu_pct']:.2f} %, RSS "
            f"{d.figures['idle_rss_mb']:.0f} MB (peak {d.figures['idle_hwm_mb']:.0f})")
    return (cpu_seconds(broker) - b0) / dt * 100


async def precision(deps: list[Deployment], maker: Maker, n: int, due_in: tuple[float, float],
                    window: tuple[float, float], procs: Procs) -> None:
    """``n`` retries per deployment due ``due_in`` s from now, each written where the record
    holding it would be now after a deferral 3-5 h ago (write times in the past)."""
    at = time.time()
    batches = []
    for dep in deps:
        recs, placed = [], {}
        for _ in range(n):
            due = at + maker.rng.uniform(*due_in)
            while True:  # one in the top tier would have been written before the far ones
                deferred = due - maker.rng.uniform(*window)
                where = holding_record(dep.tiers, due, deferred, at)
                if where is not None and where[1] < max(dep.tiers):
                    break
            env = maker.envelope(deferred, due, f"s{dep.label}")
            recs.append(maker.record(dep.config, env, due, where[0]))
            placed[where[1]] = placed.get(where[1], 0) + 1
        recs.sort(key=lambda r: r[3])  # each partition in write-time order, as hops write it
        batches.append(recs)
        dep.figures["sample_tiers"] = dict(sorted(placed.items()))
    tail = await tail_queues(deps)
    cpu0 = {d.label: cpu_seconds(d.pid) for d in deps}
    t0 = time.monotonic()
    try:
        for dep, recs in zip(deps, batches, strict=True):
            await write(dep.config, recs)
        log(f"precision: {n:,} retries per deployment due in {due_in[0]:g}-{due_in[1]:g} s "
            f"written in {time.time() - at:.1f} s; by tier {deps[0].figures['sample_tiers']}")
        deadline = at + due_in[1] + 120
        while time.time() < deadline:
            procs.check()
            if all(len(tail.lateness(f"s{d.label}-")[0]) >= n for d in deps):
                break
            await asyncio.sleep(0.5)
    finally:
        await tail.stop()
    dt = time.monotonic() - t0
    for dep in deps:
        f = dep.figures["precision"] = late_figures(*tail.lateness(f"s{dep.label}-"))
        f["missing"] = n - f["n"]
        f["worker_cpu_pct"] = (cpu_seconds(dep.pid) - cpu0[dep.label]) / dt * 100
        if f["n"]:
            log(f"{dep.label}: lateness p50 {f['p50']:.3f} p99 {f['p99']:.3f} max "
                f"{f['max']:.3f} s ({f['missing']} not released)")


async def backlog(dep: Deployment, maker: Maker, kind: str, n: int, write_rate: float,
                  broker: int | None, procs: Procs) -> None:
    """``n`` records actionable at one moment: ``release`` (tier 30 s, due: to the queue) or
    ``hop`` (tier 600 s, due 12-50 min later: to tier 600 s again). Progress is the scheduler
    group's committed offsets (it commits after the records it moved are written)."""
    cfg = dep.config
    t_plan = time.time() + n / write_rate * 1.5 + 5
    if kind == "release":
        src, written = delay_topic(cfg, 30), t_plan - 30

        def due() -> float:
            return t_plan
    else:
        src, written = delay_topic(cfg, 600), t_plan - 600

        def due() -> float:
            return t_plan + maker.rng.uniform(700, 3000)

    def records() -> Iterator[Record]:
        for _ in range(n):
            d = due()
            rec = maker.record(cfg, maker.envelope(written - 60, d, f"b{kind}"), d, written)
            assert rec[0] == src, (rec[0], src)
            yield rec

    async with Offsets(cfg) as off:
        tps = await dep.partitions([src])
        before = await off.ends(tps)
        await write(cfg, records())
        target = await off.ends(tps)
        late_write = time.time() - t_plan
        if late_write > 0:
            log(f"{dep.label}: {kind} backlog written {late_write:.1f} s after it was due "
                f"(the rate below is then partly the write rate)")
        else:
            await asyncio.sleep(-late_write)
        cpu0, b0, t0 = cpu_seconds(dep.pid), cpu_seconds(broker), time.time()
        samples = []
        while True:
            com = await off.committed(dep, tps)
            done = sum(min(max(com[tp], before[tp]), target[tp]) - before[tp] for tp in tps)
            now = time.time()
            samples.append((now - t_plan, done))
            if done >= n:
                break
            if now > t0 + 600:
                raise RuntimeError(f"{dep.label}: {kind} backlog: {done}/{n} after 600 s")
            procs.check([dep.worker])
            await asyncio.sleep(0.1)
        cpu1, b1 = cpu_seconds(dep.pid), cpu_seconds(broker)
    t_done = samples[-1][0]
    lo = next(t for t, k in samples if k >= 0.1 * n)
    hi = next(t for t, k in samples if k >= 0.9 * n)
    f = dep.figures[kind] = {
        "n": n, "seconds": t_done, "rate": n / t_done,
        "rate_10_90": 0.8 * n / (hi - lo) if hi > lo else None,
        "worker_ms": (cpu1 - cpu0) * 1000 / n, "broker_ms": (b1 - b0) * 1000 / n,
        "worker_cpu_pct": (cpu1 - cpu0) / t_done * 100}
    log(f"{dep.label}: {kind} backlog of {n:,}: {f['rate']:,.0f}/s over {t_done:.1f} s, "
        f"worker {f['worker_ms']:.3f} ms CPU/record ({f['worker_cpu_pct']:.0f} %), broker "
        f"{f['broker_ms']:.3f}")


def steady_population(dep: Deployment, rng: random.Random, window: tuple[float, float],
                      at: float) -> list[tuple[float, float, float]]:
    """(write time, due, deferred at) of the record holding each of ``dep.pending`` retries at
    ``at`` under a steady flow: a retry of delay d is pending for d seconds, so delays are drawn
    in proportion to d (length-biased) and its age uniformly within it."""
    out = []
    while len(out) < dep.pending:
        d = rng.uniform(*window)
        if rng.random() * window[1] > d:
            continue
        deferred = at - rng.uniform(0, d)
        where = holding_record(dep.tiers, deferred + d, deferred, at)
        if where is not None:
            out.append((where[0], deferred + d, deferred))
    out.sort()  # each partition in write-time order, as hops write it
    return out


async def steady(dep: Deployment, maker: Maker, window: tuple[float, float], write_rate: float,
                 warm: float, seconds: float, broker: int | None, procs: Procs,
                 profile: Path | None) -> None:
    """A steady flow's population as of a moment just after it is written; then the worker
    alone: moves per second (records written to the delay topics and the queue), CPU, and the
    lateness of the releases."""
    at = time.time() + dep.pending / write_rate * 1.4 + 20
    pop = steady_population(dep, maker.rng, window, at)
    tiers: dict[float, int] = {}

    def records() -> Iterator[Record]:
        for ts, due, deferred in pop:
            rec = maker.record(dep.config, maker.envelope(deferred, due, "st"), due, ts)
            tier = float(rec[0].rsplit(".", 1)[1][:-1])
            tiers[tier] = tiers.get(tier, 0) + 1
            yield rec

    t0 = time.monotonic()
    n, size = await write(dep.config, records())
    dep.figures["record_bytes"] = size / max(n, 1)
    dep.figures["steady_tiers"] = dict(sorted(tiers.items()))
    log(f"{dep.label}: steady population of {n:,} written in {time.monotonic() - t0:.0f} s "
        f"({size / 1e6:,.0f} MB), by tier {dep.figures['steady_tiers']}; starting its worker")
    if time.time() > at:
        log(f"{dep.label}: written {time.time() - at:.0f} s after the population's moment: "
            f"the worker starts with a backlog")
    tail = await tail_queues([dep])
    dep.start(procs, profile)
    try:
        await asyncio.sleep(max(at - time.time(), 0) + warm)
        topics = [*dep.delay_topics(), dep.config.topic("queue")]
        async with Offsets(dep.config) as off:
            tps = await dep.partitions(topics)
            e0 = await off.ends(tps)
            cpu0, b0, t0w = cpu_seconds(dep.pid), cpu_seconds(broker), time.time()
            await asyncio.sleep(seconds)
            e1 = await off.ends(tps)
            cpu1, b1, t1w = cpu_seconds(dep.pid), cpu_seconds(broker), time.time()
            tpq = [tp for tp in tps if tp.topic == dep.config.topic("queue")]
            releases = sum(e1[tp] - e0[tp] for tp in tpq)
            moves = sum(e1[tp] - e0[tp] for tp in tps)
        await asyncio.sleep(2)  # releases due at the window's end reach the tail
    finally:
        await tail.stop()
    dt = t1w - t0w
    f = dep.figures["steady"] = {
        "pending": n, "seconds": dt, "moves_per_s": moves / dt, "releases_per_s": releases / dt,
        "hops_per_s": (moves - releases) / dt,
        "worker_cpu_pct": (cpu1 - cpu0) / dt * 100, "broker_cpu_pct": (b1 - b0) / dt * 100,
        "rss_mb": rss_mb(dep.pid)[0], "hwm_mb": rss_mb(dep.pid)[1],
        "late": late_figures(*tail.lateness("st-", t0w, t1w - 1))}
    log(f"{dep.label}: steady: {f['hops_per_s']:,.0f} hops/s + {f['releases_per_s']:,.1f} "
        f"releases/s, worker {f['worker_cpu_pct']:.1f} % CPU, broker "
        f"{f['broker_cpu_pct']:.1f} %, release lateness p50 {f['late'].get('p50', 0):.3f} "
        f"p99 {f['late'].get('p99', 0):.3f} max {f['late'].get('max', 0):.3f} s")
    procs.stop(dep.worker)


# -- the report ----------------------------------------------------------------------------------
def table(deps: list[Deployment], rows: list[tuple[str, Callable[[Deployment], float | None],
                                                    str, bool]]) -> list[str]:
    """Markdown rows, a column per deployment, and the first/second ratio where asked."""
    ratio_head = f" {deps[0].label}/{deps[1].label} |" if len(deps) > 1 else ""
    out = ["| figure | " + " | ".join(f"{d.label} ({d.pending:,} pending)" for d in deps)
           + " |" + ratio_head, "|---|" + "---:|" * (len(deps) + (len(deps) > 1))]
    for name, get, fmt, ratio in rows:
        vals = [get(d) for d in deps]
        cells = ["-" if v is None else format(v, fmt) for v in vals]
        r = ""
        if ratio and len(vals) > 1 and vals[0] is not None and vals[1]:
            r = f"{vals[0] / vals[1]:.2f}"
        out.append(f"| {name} | " + " | ".join(cells) + (f" | {r} |" if len(deps) > 1 else " |"))
    return out


def report(deps: list[Deployment], steadies: list[Deployment], args: argparse.Namespace,
           broker_idle: float, predicted: dict) -> str:
    big = deps[0]
    w = f"{args.window[0] / 3600:g}-{args.window[1] / 3600:g} h"
    lines = [f"kmta retries bench: retries due in {w} (retry mode window), records of "
             f"~{big.figures['record_bytes']:,.0f} B, tiers {big.tiers} s, "
             f"{big.config.kafka.partitions} partitions per tier; {os.cpu_count()} CPUs, load "
             f"average now {' '.join(f'{x:.1f}' for x in os.getloadavg())}", ""]

    def fig(*keys: str) -> Callable[[Deployment], float | None]:
        def get(d: Deployment) -> float | None:
            v = d.figures
            for k in keys:
                if not isinstance(v, dict) or k not in v:
                    return None
                v = v[k]
            return v
        return get

    rows = [(f"idle: worker CPU % (same {args.idle:g} s)", fig("idle_cpu_pct"), ".2f", True),
            ("idle: worker RSS MB", fig("idle_rss_mb"), ".0f", True),
            ("idle: worker peak RSS MB", fig("idle_hwm_mb"), ".0f", True)]
    for key, label in (("p50", "p50"), ("p99", "p99"), ("max", "max"), ("min", "min")):
        rows.append((f"precision: lateness {label} s (written to queue)",
                     fig("precision", key), ".3f", key != "min"))
    for key, label in (("seen_p50", "p50"), ("seen_p99", "p99"), ("seen_max", "max")):
        rows.append((f"precision: lateness {label} s (seen by a consumer)",
                     fig("precision", key), ".3f", True))
    rows += [("precision: not released", fig("precision", "missing"), "d", False),
             ("precision: worker CPU %", fig("precision", "worker_cpu_pct"), ".1f", True)]
    for kind, what in (("release", "release 30 s -> queue"), ("hop", "hop 600 s -> 600 s")):
        rows += [(f"backlog {what}: records/s", fig(kind, "rate"), ",.0f", True),
                 (f"backlog {what}: records/s 10-90 %", fig(kind, "rate_10_90"), ",.0f", True),
                 (f"backlog {what}: worker CPU ms/record", fig(kind, "worker_ms"), ".3f", True),
                 (f"backlog {what}: broker CPU ms/record", fig(kind, "broker_ms"), ".3f", True)]
    lines += table(deps, rows)
    lines += ["", f"idle broker CPU (serving all {len(deps)} idle workers): {broker_idle:.1f} %;"
              f" precision sample by tier: {big.figures.get('sample_tiers')}"]
    p = predicted
    share = ", ".join(f"{t:g} s {s:.1%}" for t, s in p["share"].items())
    lines += ["", f"steady state of {args.steady:,} pending retries due in {w}:",
              f"- moves per retry (hops + release) along the choose_tier chain: mean "
              f"{p['moves']:.2f} (min {p['moves_min']}, max {p['moves_max']})",
              f"- where they wait (share of waiting time = of pending): {share}",
              f"- predicted: {p['retries_per_s']:,.1f} retries/s come due: {p['hops_per_s']:,.0f}"
              f" hops/s + {p['releases_per_s']:,.1f} releases/s"]
    hop, rel = big.figures.get("hop"), big.figures.get("release")
    if hop and rel:
        wk = p["hops_per_s"] * hop["worker_ms"] + p["releases_per_s"] * rel["worker_ms"]
        bk = p["hops_per_s"] * hop["broker_ms"] + p["releases_per_s"] * rel["broker_ms"]
        mb = (p["hops_per_s"] + p["releases_per_s"]) * big.figures["record_bytes"] / 1e6
        lines.append(f"- at the backlog's cost per record: worker {wk / 10:.1f} % of a core, "
                     f"broker {bk / 10:.1f} % ({p['hops_per_s'] / hop['rate']:.1%} of the "
                     f"backlog hop rate); {mb:.2f} MB/s of envelopes rewritten")
    if steadies:
        lines.append("")
        rows = [("moves/s (hops + releases)", fig("steady", "moves_per_s"), ",.0f", True),
                ("hops/s", fig("steady", "hops_per_s"), ",.0f", True),
                ("releases/s", fig("steady", "releases_per_s"), ",.1f", True),
                ("worker CPU %", fig("steady", "worker_cpu_pct"), ".1f", True),
                ("broker CPU %", fig("steady", "broker_cpu_pct"), ".1f", True),
                ("worker CPU ms per move", lambda d: d.figures["steady"]["worker_cpu_pct"] * 10
                 / d.figures["steady"]["moves_per_s"] if d.figures.get("steady", {}).get(
                     "moves_per_s") else None, ".3f", True),
                ("worker RSS MB", fig("steady", "rss_mb"), ".0f", True),
                ("release lateness p50 s", fig("steady", "late", "p50"), ".3f", True),
                ("release lateness p99 s", fig("steady", "late", "p99"), ".3f", True),
                ("release lateness max s", fig("steady", "late", "max"), ".3f", True),
                ("releases measured", fig("steady", "late", "n"), "d", False)]
        lines.append(f"measured, worker alone for {args.steady_window:g} s on a steady flow's "
                     f"population (by tier: {steadies[0].figures.get('steady_tiers')}):")
        lines += table(steadies, rows)
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split(
        "\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pending", type=int, default=1_000_000, help="retries held by 'big'")
    p.add_argument("--baseline", type=int, default=1000, help="retries held by 'small'")
    p.add_argument("--sample", type=int, default=10_000, help="precision sample per deployment")
    p.add_argument("--due", type=float, nargs=2, default=(30.0, 90.0), metavar=("FROM", "TO"),
                   help="the sample is due FROM-TO seconds after it is written")
    p.add_argument("--window", type=float, nargs=2, default=(3 * 3600.0, 5 * 3600.0),
                   metavar=("FROM", "TO"), help="retry window, seconds (default 3-5 h)")
    p.add_argument("--backlog", type=int, default=100_000, help="records due at once, per kind")
    p.add_argument("--idle", type=float, default=60.0, help="idle measurement, seconds")
    p.add_argument("--settle", type=float, default=20.0,
                   help="seconds from the workers' first release to the idle window")
    p.add_argument("--steady", type=int, help="steady-state population (default --pending; "
                   "0 skips the phase)")
    p.add_argument("--steady-window", type=float, default=60.0, help="seconds measured")
    p.add_argument("--steady-warm", type=float, default=20.0,
                   help="seconds of the steady worker's run before the measurement")
    p.add_argument("--size", type=int, default=1024, help="approximate record size, bytes")
    p.add_argument("--compare", action="append", default=[], metavar="LABEL=PATH",
                   help="the same phases with a worker from another source tree")
    p.add_argument("--bootstrap", default=os.environ.get("KMTA_TEST_BOOTSTRAP"))
    p.add_argument("--profile", type=Path, help="run the workers under cProfile, report here")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs)")
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args(argv)
    if args.steady is None:
        args.steady = args.pending
    for item in args.compare:
        label, sep, path = item.partition("=")
        if not sep or not label.isidentifier() or not Path(path).is_dir():
            p.error(f"--compare {item!r}: want LABEL=PATH (LABEL a plain word, PATH a tree)")
    return args


async def run(args: argparse.Namespace, base: Path, procs: Procs, bootstrap: str,
              broker: int | None, dns_port: int) -> str:
    roots = [("", ROOT)] + [(label, Path(path).resolve()) for label, _, path in
                            (c.partition("=") for c in args.compare)]
    deps = [deployment("big", ROOT, args.pending, base, bootstrap, dns_port),
            deployment("small", ROOT, args.baseline, base, bootstrap, dns_port)]
    deps += [deployment(label, root, args.baseline, base, bootstrap, dns_port)
             for label, root in roots[1:]]
    steadies = [deployment(f"steady{label}", root, args.steady, base, bootstrap, dns_port)
                for label, root in roots] if args.steady else []
    maker = Maker(KnowledgeBase.load(), args.size, args.seed)
    window = (args.window[0], args.window[1])
    profile = args.profile.resolve() if args.profile else None
    for dep in deps + steadies:
        await ensure_topics(dep.config)
    rates = [await fill(dep, maker, window) for dep in deps]
    write_rate = max(rates[0], 5000.0) if deps[0].pending >= 20000 else 15000.0
    for dep in deps:
        log(f"{dep.label}: starting a worker from {dep.root}")
        dep.start(procs, profile)
    await probe(deps, maker, procs, 180)
    log(f"workers released their probes; settling {args.settle:g} s, idle {args.idle:g} s")
    await asyncio.sleep(args.settle)
    broker_idle = await idle(deps, args.idle, broker)
    await precision(deps, maker, args.sample, args.due, window, procs)
    for dep in deps:
        for kind in ("release", "hop"):
            await backlog(dep, maker, kind, args.backlog, write_rate, broker, procs)
    for dep in deps:
        procs.stop(dep.worker)  # the steady phase has the machine to itself
    for dep in steadies:
        await steady(dep, maker, window, write_rate, args.steady_warm, args.steady_window,
                     broker, procs, profile)
    predicted = model(deps[0].tiers, window, args.steady or args.pending,
                      random.Random(args.seed))
    if args.json:
        args.json.write_text(json.dumps({
            "args": {k: str(v) for k, v in vars(args).items()}, "predicted": predicted,
            "broker_idle_cpu_pct": broker_idle,
            "deployments": {d.label: {"pending": d.pending, **d.figures}
                            for d in deps + steadies}}, indent=2, default=str))
    return report(deps, steadies, args, broker_idle, predicted)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # leader moves of new topics

    interrupt_on_signals()
    base = Path(tempfile.mkdtemp(prefix="kmta-bench-retries-"))
    procs = Procs(base / "logs")
    procs.logdir.mkdir()
    dns: DnsServerThread | None = None
    broker_data: Path | None = None
    t0 = time.monotonic()
    try:
        bootstrap, broker_data = kafka_for(args.bootstrap, base)
        dns = start_dns(mx_zone({d: m for d, _, m in DOMAINS},
                                {m: f"127.0.1.{i + 1}" for i, (_, _, m) in enumerate(DOMAINS)},
                                ttl=3600))
        log(f"broker {bootstrap}, dns 127.0.0.1:{dns.port}, dir {base}")
        text = asyncio.run(run(args, base, procs, bootstrap, broker_pid(broker_data),
                               dns.port))
        print()
        print(text)
        print(f"\n(run took {time.monotonic() - t0:.0f} s)")
        if args.profile:
            print()
            print(profile_report(args.profile.resolve(), 25))
        return 0
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        clean_up(procs, dns, broker_data, base, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
