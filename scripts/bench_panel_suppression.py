#!/usr/bin/env python3
"""The panel's suppression list at scale: in a fresh process, feed N suppression records
(default 1 M) through the dashboard's own path (``dashboard.feed.apply_record`` into a
``Board``, as read from the topic), then time what the panel asks (counts, a page newest
first, a domain's page, an address prefix, how many match, one record by key) and print the
process's resident memory. ``--before`` keeps the records as the board did before (a dict of
pydantic records) for comparison.

    python scripts/bench_panel_suppression.py [--n 1000000] [--before]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from dashboard.feed import apply_record
from dashboard.model import Board
from schemas.suppression import Suppression

REASONS = ("hard_bounce", "async_bounce", "complaint", "unsubscribe", "manual")


def domain(i: int) -> str:
    # a third at one big provider, the rest spread over 5,000 domains
    return "gmail.com" if i % 3 == 0 else f"domain{i % 5000}.example"


def record(i: int) -> tuple[bytes, bytes]:
    address = f"user{i}@{domain(i)}"
    doc = {"address": address, "scope": "global", "reason": REASONS[i % 5],
           "category": "bad_mailbox", "detail": "550 5.1.1 user unknown", "id": f"m-{i}",
           "by": "bench", "at": 1.7e9 + i}
    return json.dumps(doc).encode(), address.encode()


def rss_mb() -> tuple[int, int]:
    status = Path("/proc/self/status").read_text()
    mem = {line.split(":")[0]: int(line.split()[1]) // 1024 for line in status.splitlines()
           if line.startswith(("VmRSS", "VmHWM"))}
    return mem["VmRSS"], mem["VmHWM"]


def timed(f, repeat: int = 20) -> float:
    """Median milliseconds of ``repeat`` calls."""
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        ts.append((time.perf_counter() - t) * 1000)
    ts.sort()
    return round(ts[len(ts) // 2], 2)


def measure(n: int, before: bool) -> dict:
    start_rss = rss_mb()[0]
    t0 = time.perf_counter()
    if before:
        held: dict[str, Suppression] = {}
        for i in range(n):
            value, key = record(i)
            held[key.decode()] = Suppression.model_validate_json(value)
        out = {"mode": "before: dict of records"}
    else:
        board = Board()
        for i in range(n):
            value, key = record(i)
            apply_record(board, "suppression", value, key)
        mid = f"user{n // 2}@{domain(n // 2)}"
        out = {"mode": "now: sqlite store",
               "counts_ms": timed(board.suppression_counts),
               "page_newest_ms": timed(lambda: board.suppression_rows("", 20, 0)),
               "page_newest_at_10000_ms": timed(lambda: board.suppression_rows("", 20, 10000)),
               "page_domain_ms": timed(lambda: board.suppression_rows("@gmail.com", 20, 0)),
               "page_small_domain_ms": timed(
                   lambda: board.suppression_rows("domain7.example", 20, 0)),
               "page_prefix_ms": timed(lambda: board.suppression_rows("user12345", 20, 0)),
               "matches_gmail_ms": timed(lambda: board.suppression_matches("gmail.com"), 5),
               "matches_small_domain_ms": timed(
                   lambda: board.suppression_matches("@domain7.example")),
               "get_ms": timed(lambda: board.suppression(mid)),
               "total": board.suppression_counts()["total"]}
    fed = time.perf_counter() - t0
    rss, hwm = rss_mb()
    return {**out, "n": n, "feed_s": round(fed, 1), "us_per_record": round(fed / n * 1e6, 1),
            "rss_mb": rss, "hwm_mb": hwm, "rss_at_start_mb": start_rss}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--before", action="store_true", help="also measure the old dict")
    ap.add_argument("--measure", choices=("now", "before"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:
        print(json.dumps(measure(a.n, a.measure == "before")))
        return 0
    for mode in ("now", "before") if a.before else ("now",):
        out = subprocess.run([sys.executable, __file__, "--measure", mode, "--n", str(a.n)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout)
        print(f"{r['mode']}: {r['n']:,} records fed in {r['feed_s']} s "
              f"({r['us_per_record']} us each); RSS {r['rss_mb']} MB (peak {r['hwm_mb']} MB, "
              f"{r['rss_at_start_mb']} MB before the first record)")
        if mode == "now":
            print("  median ms: " + ", ".join(f"{k[:-3]} {v}" for k, v in r.items()
                                              if k.endswith("_ms")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
