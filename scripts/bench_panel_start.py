#!/usr/bin/env python3
"""The panel's start with N suppression records on the topic (default 1 M): a cold start (no
store: the whole topic is read into it) and a warm start after ``--changes`` records were
written while the panel was down (the store resumes from its offsets), each timed from the
feed's start until it has caught up; then ``kmta suppression export`` (which streams from its
own kept store) run twice as an operator runs it, with its peak RSS. Starts a broker of its own
unless ``--bootstrap`` is given.

    python scripts/bench_panel_start.py [--n 1000000] [--changes 1000] [--bootstrap HOST:PORT]

``--warm-only-n M`` fakes a store of M records (written straight into the file, with offsets
at the topic's end less ``--changes``) to time a warm start at 10 M without reading 10 M
records first; the cold start at that size is then the N figure scaled (said in the output).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomli_w

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dashboard.feed import Feed  # noqa: E402
from dashboard.model import Board  # noqa: E402
from kmta.config import load_config  # noqa: E402
from kmta.pipeline.kafkaio import ensure_topics, make_producer, topic_partitions  # noqa: E402
from kmta.pipeline.suppressionstore import SuppressionStore  # noqa: E402
from ops.kit import kafka_for, stop_broker  # noqa: E402

REASONS = ("hard_bounce", "async_bounce", "complaint", "unsubscribe", "manual")


def doc(i: int, tag: str = "") -> tuple[bytes, bytes]:
    address = f"user{i}{tag}@{'gmail.com' if i % 3 == 0 else f'domain{i % 5000}.example'}"
    d = {"address": address, "scope": "global", "reason": REASONS[i % 5],
         "category": "bad_mailbox", "detail": "550 5.1.1 user unknown", "id": f"m-{i}",
         "by": "bench", "at": 1.7e9 + i}
    return address.encode(), json.dumps(d).encode()


async def produce(config, start: int, n: int, tag: str = "") -> None:
    p = make_producer(config, linger_ms=50, max_batch_size=1 << 20)
    await p.start()
    try:
        topic = config.topic("suppression")
        pending = []
        for i in range(start, start + n):
            k, v = doc(i, tag)
            pending.append(await p.send(topic, v, key=k))
            if len(pending) >= 20000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await p.stop()


def start_panel(config, path: str) -> tuple[float, int, bool, int]:
    """Seconds until caught up, records applied, rebuilt, total shown."""
    t0 = time.perf_counter()
    board = Board(suppression_path=path)
    feed = Feed(config, board)
    feed.start()
    if not feed.caught_up.wait(7200):
        raise RuntimeError(f"panel did not catch up: {feed.error}")
    took = time.perf_counter() - t0
    store = board.suppression_store
    out = (took, store.applied, store.rebuilt, board.suppression_counts()["total"])
    feed.stop()
    board.close()
    return out


def fake_store(config, path: str, m: int, changes: int) -> None:
    """A store of ``m`` records with offsets at the topic's end less ``changes`` (spread
    over the partitions): what a panel that had read m records leaves behind."""
    store = SuppressionStore(path)
    db = store._db  # bulk rows straight into the table: the benchmark's shortcut
    for lo in range(0, m, 100_000):
        rows = []
        for i in range(lo, min(m, lo + 100_000)):
            k, v = doc(i, "f")
            d = json.loads(v)
            rows.append((k.decode(), d["address"], d["address"].rpartition("@")[2], "global",
                         d["reason"], d["at"], v.decode()))
        db.executemany("INSERT OR REPLACE INTO r VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        db.execute("COMMIT")
        db.execute("BEGIN")
    for i in range(m):
        store._counts[REASONS[i % 5]] += 1
    store._total = m

    async def ends() -> dict[int, int]:
        from aiokafka import AIOKafkaConsumer

        from kmta.pipeline.kafkaio import client_options
        c = AIOKafkaConsumer(**client_options(config))
        await c.start()
        try:
            tps = await topic_partitions(config, [config.topic("suppression")])
            return {tp.partition: o for tp, o in (await c.end_offsets(tps)).items()}
        finally:
            await c.stop()
    end = asyncio.run(ends())
    back = changes // len(end)
    for part, o in end.items():
        store.mark(config.topic("suppression"), part, max(0, o - back))
    store.close()


def export_rss(cfg_path: Path, out: Path) -> tuple[float, float]:
    """``kmta suppression export``: seconds, and the peak RSS (MB) of that child alone."""
    t0 = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "kmta.cli", "--config", str(cfg_path),
                              "suppression", "export", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.stderr is not None
    err = child.stderr.read()
    # wait4 gives this child's own rusage (RUSAGE_CHILDREN is the largest child so far, which
    # may be an earlier one)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"export failed ({child.returncode}): {err.decode(errors='replace')}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--warm-only-n", type=int, default=0)
    ap.add_argument("--bootstrap")
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-panel-start-"))
    bootstrap, broker = kafka_for(a.bootstrap, base)
    try:
        cfg_path = base / "kmta.toml"
        cfg_path.write_text(tomli_w.dumps({
            "data_dir": str(base / "data"),
            "kafka": {"bootstrap_servers": bootstrap,
                      "topic_prefix": f"b{os.getpid()}."}}))
        config = load_config(cfg_path)
        asyncio.run(ensure_topics(config))
        t0 = time.perf_counter()
        asyncio.run(produce(config, 0, a.n))
        print(f"{a.n:,} records written to the topic in {time.perf_counter() - t0:.0f} s")
        path = str(base / "panel.sqlite")
        took, applied, rebuilt, total = start_panel(config, path)
        print(f"cold start (no store): {took:.1f} s, {applied:,} records read "
              f"({took / max(applied, 1) * 1e6:.0f} us each), rebuilt={rebuilt}, "
              f"total {total:,}; store {os.path.getsize(path) / 1e6:.0f} MB")
        asyncio.run(produce(config, a.n, a.changes, "x"))
        took2, applied2, rebuilt2, total2 = start_panel(config, path)
        print(f"warm start after {a.changes:,} changes: {took2:.2f} s, {applied2:,} records "
              f"read, rebuilt={rebuilt2}, total {total2:,}")
        if a.n >= 100_000:
            print(f"  10 M extrapolated: cold {took / applied * 1e7 / 60:.0f} min "
                  f"(linear in the records read)")
        for run in (1, 2):
            secs, rss = export_rss(cfg_path, base / "out.csv")
            print(f"kmta suppression export run {run}: {secs:.1f} s, peak RSS {rss:.0f} MB, "
                  f"CSV {os.path.getsize(base / 'out.csv') / 1e6:.0f} MB")
        if a.warm_only_n:
            fpath = str(base / "fake.sqlite")
            t0 = time.perf_counter()
            fake_store(config, fpath, a.warm_only_n, a.changes)
            print(f"fake store of {a.warm_only_n:,} records built in "
                  f"{time.perf_counter() - t0:.0f} s ({os.path.getsize(fpath) / 1e6:.0f} MB)")
            took3, applied3, rebuilt3, total3 = start_panel(config, fpath)
            print(f"warm start with {a.warm_only_n:,} stored: {took3:.2f} s, {applied3:,} "
                  f"records read, rebuilt={rebuilt3}, total {total3:,}")
    finally:
        if broker is not None:
            stop_broker(broker)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
