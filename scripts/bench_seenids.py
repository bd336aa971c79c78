#!/usr/bin/env python3
"""``SeenIds`` alone: the dedup window in memory (main's) against memory + file (``path=``).

Each variant runs in a child process of its own (its own VmHWM), the variants one after the
other, ``--rounds`` times. A child sets ``--ids`` ids as the router does per message (``get``
and set in ``Router._first``; per-message garbage between, a ring of
``--garbage`` small objects), spills and merges included, then times ``--probe``
lookups of ids not seen (a new message's lookup in the full window: each misses memory and,
with a file, reads it) and ``--probe`` of ids taken long ago (a duplicate or a reread: a hit
in the file), then one prune of the oldest ``--prune`` ids.

    python scripts/bench_seenids.py --ids 1000000 --rounds 2

Printed per variant and round: CPU µs a message while filling (get and set, spills included)
and of a miss in the full window, CPU µs a hit on an old id, the longest single set in wall time (a
spill: the event loop's stall), the prune's CPU, VmHWM and VmRSS at the end, the file's size.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kmta.pipeline.seenids import HOT, SeenIds  # noqa: E402
from kmta.policy.dedup import Seen  # noqa: E402


def _status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(args: argparse.Namespace) -> dict:
    tmp = tempfile.mkdtemp(prefix="seenids-")
    path = os.path.join(tmp, "seen.sqlite") if args.variant == "file" else None
    ids = SeenIds(path=path, hot=args.hot)
    ring: list[object] = [None] * args.garbage
    t0 = 1.8e9
    clock = time.perf_counter  # the longest set: wall time (the event loop's stall)
    cpu = time.process_time  # the rest: CPU time (the machine is shared)
    worst = 0.0

    def message(i: int) -> None:
        nonlocal worst
        k = f"<{i:012d}.bench@kmta.example>"
        start = clock()
        seen = ids.get(k)
        if seen is None:
            ids[k] = Seen(t0 + i * 0.001, i % 64, i)
        worst = max(worst, clock() - start)
        ring[i % len(ring)] = {"id": k, "body": "x" * 64}

    start = cpu()
    for i in range(args.ids):
        message(i)
    fill = cpu() - start
    start = cpu()
    for i in range(args.ids, args.ids + args.probe):  # new ids in the full window: misses
        ids.get(f"<{i:012d}.bench@kmta.example>")
    full = cpu() - start
    start = cpu()
    hits = 0
    for i in range(0, args.probe * 97, 97):
        hits += ids.get(f"<{i % args.ids:012d}.bench@kmta.example>") is not None
    hit = cpu() - start
    assert hits == args.probe
    start = cpu()
    pruned = ids.prune(t0 + args.prune * 0.001 - 0.0005)
    prune = cpu() - start
    size = os.path.getsize(path) if path else 0
    ids.close()
    return {"variant": args.variant, "fill_us": fill / args.ids * 1e6,
            "full_us": full / args.probe * 1e6, "hit_us": hit / args.probe * 1e6,
            "worst_set_ms": worst * 1e3, "prune_ms": prune * 1e3,
            "pruned": pruned, "hwm_mb": _status("VmHWM"), "rss_mb": _status("VmRSS"),
            "file_mb": size / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ids", type=int, default=1_000_000)
    ap.add_argument("--probe", type=int, default=50_000)
    ap.add_argument("--prune", type=int, default=100_000)
    ap.add_argument("--hot", type=int, default=HOT)
    ap.add_argument("--garbage", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--variant", choices=["memory", "file"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(child(args)))
        return
    print(f"{args.ids:,} ids; probe {args.probe:,}; hot {args.hot:,}")
    print(f"{'variant':8} {'fill µs':>8} {'full µs':>8} {'hit µs':>7} {'worst set ms':>12} "
          f"{'prune ms':>9} {'VmHWM MB':>9} {'VmRSS MB':>9} {'file MB':>8}")
    base = [sys.executable, __file__, "--ids", str(args.ids), "--probe", str(args.probe),
            "--prune", str(args.prune), "--hot", str(args.hot), "--garbage", str(args.garbage)]
    for _ in range(args.rounds):
        for variant in ("memory", "file"):
            out = subprocess.run([*base, "--variant", variant], check=True, capture_output=True,
                                 text=True).stdout
            r = json.loads(out)
            print(f"{variant:8} {r['fill_us']:8.2f} {r['full_us']:8.2f} {r['hit_us']:7.2f} "
                  f"{r['worst_set_ms']:12.1f} {r['prune_ms']:9.1f} {r['hwm_mb']:9.1f} "
                  f"{r['rss_mb']:9.1f} {r['file_mb']:8.1f}", flush=True)


if __name__ == "__main__":
    main()
