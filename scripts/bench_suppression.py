#!/usr/bin/env python3
"""The suppression list at scale: build an index of N keys (default 10 M), then, in a fresh
process that opens it the way a worker does (``kmta/pipeline/suppression.py``), time lookups
the route loop makes (three keys a message: global, sending domain, campaign) and print its
resident memory. A second fresh process times the lookups as they were before (one sqlite
query a message against the file through a 256 MiB memory map), for comparison.

    python scripts/bench_suppression.py [--n 10000000] [--lookups 200000] [--dir DIR]

The index file is kept in ``--dir`` (default .kmta/bench-suppression) and reused when it
already holds N keys, so a rerun measures in seconds. Figures: lookup mean/p50/p99 in
microseconds (hits and misses mixed), wall clock and on-CPU (the thread's CPU time: without
the time the process waited for a core on a loaded machine), VmRSS and VmHWM of the
looking-up process, the open (load) time, file size.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from kmta.pipeline.suppression import SuppressionIndex, key_hash
from kmta.policy.suppression import is_suppressed

ROOT = Path(__file__).resolve().parent.parent


def address(i: int) -> str:
    return f"user{i}@domain{i % 5000}.example"


def build(path: str, n: int) -> float:
    t0 = time.perf_counter()
    idx = SuppressionIndex(path, load=False)
    have = len(idx)
    if have >= n:
        idx.close()
        return 0.0
    step = 500_000
    for start in range(have, n, step):
        # keys in hash order per chunk: sqlite appends to fewer B-tree pages
        idx.add_hashes(sorted(key_hash(address(i)) for i in range(start, min(n, start + step))))
        print(f"  {min(n, start + step):,} keys", file=sys.stderr, flush=True)
    idx.close()
    return time.perf_counter() - t0


class _Before:
    """The lookup as it was before the in-memory set: one query for a message's keys."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path)
        self._db.execute("PRAGMA cache_size=-16384")
        self._db.execute(f"PRAGMA mmap_size={256 << 20}")

    def contains_any(self, keys: list[str]) -> bool:
        q = f"SELECT 1 FROM s WHERE h IN ({','.join('?' * len(keys))}) LIMIT 1"
        return self._db.execute(q, [key_hash(k) for k in keys]).fetchone() is not None

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM s").fetchone()[0])


def _pct(times: list[int], q: float) -> float:
    return round(times[min(len(times) - 1, int(len(times) * q))] / 1000, 2)


def measure(path: str, n: int, lookups: int, mode: str) -> dict:
    """Runs in its own process: open, look up, report."""
    t0 = time.perf_counter()
    idx = SuppressionIndex(path) if mode == "memory" else _Before(path)
    opened = time.perf_counter() - t0
    rng = random.Random(7)
    probes = [address(rng.randrange(n)) if i % 2 else f"nobody{i}@nowhere.example"
              for i in range(lookups)]
    doms = ("shop.example",)
    for a in probes[:2000]:  # warm the cache a little, as a running worker's would be
        is_suppressed(idx, a, doms, "spring")
    times, cpu = [], []
    hits = 0
    clock, on_cpu = time.perf_counter_ns, time.thread_time_ns
    for a in probes:
        c = on_cpu()
        t = clock()
        hits += is_suppressed(idx, a, doms, "spring")
        times.append(clock() - t)
        cpu.append(on_cpu() - c)
    times.sort()
    cpu.sort()
    stalls = sum(1 for t in times if t > 1_000_000)
    status = Path("/proc/self/status").read_text()
    mem = {line.split(":")[0]: int(line.split()[1]) // 1024 for line in status.splitlines()
           if line.startswith(("VmRSS", "VmHWM"))}
    return {"mode": mode, "keys": len(idx), "lookups": lookups, "hits": hits,
            "open_s": round(opened, 2),
            "mean_us": round(sum(times) / len(times) / 1000, 2),
            "p50_us": _pct(times, 0.5), "p99_us": _pct(times, 0.99),
            "p999_us": _pct(times, 0.999),
            "cpu_p50_us": _pct(cpu, 0.5), "cpu_p99_us": _pct(cpu, 0.99),
            "stalls_over_1ms": stalls,
            "rss_mb": mem["VmRSS"], "hwm_mb": mem["VmHWM"],
            "file_mb": round(os.path.getsize(path) / 2**20)}


def _line(r: dict) -> str:
    return (f"mean {r['mean_us']} us, p50 {r['p50_us']} us, p99 {r['p99_us']} us, "
            f"p99.9 {r['p999_us']} us; on-CPU p50 {r['cpu_p50_us']} us, p99 "
            f"{r['cpu_p99_us']} us ({r['stalls_over_1ms']} over 1 ms wall); "
            f"RSS {r['rss_mb']} MB (peak {r['hwm_mb']} MB), opened in {r['open_s']} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--lookups", type=int, default=200_000)
    ap.add_argument("--dir", default=".kmta/bench-suppression")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="memory", help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the figures to this file")
    a = ap.parse_args()
    if a.measure:
        print(json.dumps(measure(a.measure, a.n, a.lookups, a.mode)))
        return 0
    os.makedirs(a.dir, exist_ok=True)
    path = os.path.join(a.dir, f"index-{a.n}.sqlite")
    built = build(path, a.n)
    figures = {}
    for mode in ("memory", "file"):
        out = subprocess.run([sys.executable, __file__, "--measure", path, "--mode", mode,
                              "--n", str(a.n), "--lookups", str(a.lookups)],
                             capture_output=True, text=True, check=True)
        figures[mode] = json.loads(out.stdout)
    r = figures["memory"]
    print(f"suppression index: {r['keys']:,} keys, file {r['file_mb']} MB"
          + (f", built in {round(built, 1)} s" if built else " (reused)"))
    print(f"lookups: 3 keys a message, {r['lookups']:,} messages, half listed; wall times "
          "include waiting for a core (descheduled) on a loaded machine")
    print(f"  now, in-memory sorted hashes: {_line(r)}")
    print(f"  before, one sqlite query a message (memory-mapped file): {_line(figures['file'])}")
    r = {"build_s": round(built, 1), **figures}
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
