#!/usr/bin/env python3
"""The suppression list at scale: build an index of N keys (default 10 M), then, in a fresh
process that opens it the way a worker does (``kmta/pipeline/suppression.py``), time lookups
the route loop makes (three keys a message: global, sending domain, campaign) and print its
resident memory.

    python scripts/bench_suppression.py [--n 10000000] [--lookups 200000] [--dir DIR]

The index file is kept in ``--dir`` (default .kmta/bench-suppression) and reused when it
already holds N keys, so a rerun measures in seconds. Figures: lookup mean/p50/p99 in
microseconds (hits and misses mixed), VmRSS and VmHWM of the looking-up process, file size.
"""
from __future__ import annotations

import argparse
import json
import os
import random
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
    idx = SuppressionIndex(path)
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


def measure(path: str, n: int, lookups: int) -> dict:
    """Runs in its own process: open, look up, report."""
    idx = SuppressionIndex(path)
    rng = random.Random(7)
    probes = [address(rng.randrange(n)) if i % 2 else f"nobody{i}@nowhere.example"
              for i in range(lookups)]
    doms = ("shop.example",)
    for a in probes[:2000]:  # warm the cache a little, as a running worker's would be
        is_suppressed(idx, a, doms, "spring")
    times = []
    hits = 0
    clock = time.perf_counter_ns
    for a in probes:
        t = clock()
        hits += is_suppressed(idx, a, doms, "spring")
        times.append(clock() - t)
    times.sort()
    stalls = sum(1 for t in times if t > 1_000_000)
    status = Path("/proc/self/status").read_text()
    mem = {line.split(":")[0]: int(line.split()[1]) // 1024 for line in status.splitlines()
           if line.startswith(("VmRSS", "VmHWM"))}
    return {"keys": len(idx), "lookups": lookups, "hits": hits,
            "mean_us": round(sum(times) / len(times) / 1000, 2),
            "p50_us": round(times[len(times) // 2] / 1000, 2),
            "p99_us": round(times[int(len(times) * 0.99)] / 1000, 2),
            "p999_us": round(times[int(len(times) * 0.999)] / 1000, 2),
            "stalls_over_1ms": stalls,
            "rss_mb": mem["VmRSS"], "hwm_mb": mem["VmHWM"],
            "file_mb": round(os.path.getsize(path) / 2**20)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--lookups", type=int, default=200_000)
    ap.add_argument("--dir", default=".kmta/bench-suppression")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the figures to this file")
    a = ap.parse_args()
    if a.measure:
        print(json.dumps(measure(a.measure, a.n, a.lookups)))
        return 0
    os.makedirs(a.dir, exist_ok=True)
    path = os.path.join(a.dir, f"index-{a.n}.sqlite")
    built = build(path, a.n)
    out = subprocess.run([sys.executable, __file__, "--measure", path, "--n", str(a.n),
                          "--lookups", str(a.lookups)], capture_output=True, text=True,
                         check=True)
    r = json.loads(out.stdout)
    r["build_s"] = round(built, 1)
    print(f"suppression index: {r['keys']:,} keys, file {r['file_mb']} MB"
          + (f", built in {r['build_s']} s" if built else " (reused)"))
    print(f"lookup (3 keys a message, {r['lookups']:,} messages, half listed): "
          f"mean {r['mean_us']} us, p50 {r['p50_us']} us, p99 {r['p99_us']} us, "
          f"p99.9 {r['p999_us']} us ({r['stalls_over_1ms']} over 1 ms: the process was "
          "descheduled or a page read from disk)")
    print(f"looking-up process: RSS {r['rss_mb']} MB (peak {r['hwm_mb']} MB)")
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
