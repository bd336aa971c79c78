#!/usr/bin/env python3
"""``SeenIds`` alone: the dedup window in memory (main's) against memory + file (``path=``).

Each variant runs in a child process of its own (its own VmHWM), the variants one after the
other, ``--rounds`` times. A child sets ``--ids`` ids as the router does per message (``get``
and set in ``Router._first``; per-message garbage between, a ring of
``--garbage`` small objects), spills and merges included, then times ``--probe``
lookups of ids not seen (a new message's lookup in the full window: each misses memory and,
with a file, reads it) and ``--probe`` of ids taken long ago (a duplicate or a reread: a hit
in the file), then one prune of the oldest ``--prune`` ids and ``--after`` messages more
(with a file: the prune's chunked delete runs behind them).

    python scripts/bench_seenids.py --ids 1000000 --rounds 2 --before /work/main

``--before DIR``: a third variant, ``file`` with the ``SeenIds`` of another tree (an older
commit's worktree), run beside this tree's in the same rounds.

Printed per variant and round: CPU µs a message while filling (get and set, spills included)
and of a miss in the full window, CPU µs a hit on an old id, the longest single call in wall
CPU time while filling (a set: a merge or a spill, the event loop's stall), the prune call's
CPU time, the longest call of the messages after it, the calls (get and set) of more than
10 ms in all, VmHWM and VmRSS at the end, the file's size.
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
HOT = 1 << 17  # kmta.pipeline.seenids.HOT (imported by the child, from its tree)


def _status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(args: argparse.Namespace) -> dict:
    sys.path.insert(0, args.root or str(ROOT))
    from kmta.pipeline.seenids import SeenIds
    from kmta.policy.dedup import Seen

    tmp = tempfile.mkdtemp(prefix="seenids-")
    path = os.path.join(tmp, "seen.sqlite") if args.variant == "file" else None
    ids = SeenIds(path=path, hot=args.hot)
    ring: list[object] = [None] * args.garbage
    t0 = 1.8e9
    # the longest call: the thread's CPU time (the event loop's stall on a quiet machine; the
    # wall time of a shared one adds other processes' turns to it); the rest: process CPU
    clock = time.thread_time
    cpu = time.process_time
    worst = 0.0
    slow = 0  # calls of more than 10 ms

    def message(i: int) -> None:
        nonlocal worst, slow
        k = f"<{i:012d}.bench@kmta.example>"
        start = clock()
        seen = ids.get(k)
        if seen is None:
            ids[k] = Seen(t0 + i * 0.001, i % 64, i)
        took = clock() - start
        worst = max(worst, took)
        slow += took > 0.010
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
    start = clock()
    pruned = ids.prune(t0 + args.prune * 0.001 - 0.0005)  # main's returns the count
    prune = clock() - start
    worst_fill, worst, slow_fill, slow = worst, 0.0, slow, 0
    for i in range(args.ids + args.probe, args.ids + args.probe + args.after):
        message(i)
    if pruned is None:  # the delete runs behind the messages: the rest of it now
        ids.flush()
        pruned = ids.forgotten
    size = os.path.getsize(path) if path else 0
    ids.close()
    return {"variant": args.variant, "fill_us": fill / args.ids * 1e6,
            "full_us": full / args.probe * 1e6, "hit_us": hit / args.probe * 1e6,
            "worst_set_ms": worst_fill * 1e3, "prune_ms": prune * 1e3,
            "worst_after_ms": worst * 1e3, "slow": slow_fill + slow,
            "pruned": pruned, "hwm_mb": _status("VmHWM"), "rss_mb": _status("VmRSS"),
            "file_mb": size / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ids", type=int, default=1_000_000)
    ap.add_argument("--probe", type=int, default=50_000)
    ap.add_argument("--prune", type=int, default=100_000)
    ap.add_argument("--hot", type=int, default=HOT)
    ap.add_argument("--after", type=int, default=100_000)
    ap.add_argument("--garbage", type=int, default=2000)
    ap.add_argument("--before", help="another tree whose SeenIds runs as variant 'before'")
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--variant", choices=["memory", "file"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(child(args)))
        return
    print(f"{args.ids:,} ids; probe {args.probe:,}; hot {args.hot:,}")
    print(f"{'variant':8} {'fill µs':>8} {'full µs':>8} {'hit µs':>7} {'worst set ms':>12} "
          f"{'prune ms':>9} {'worst after ms':>14} {'>10 ms':>6} {'pruned':>8} {'VmHWM MB':>9} "
          f"{'VmRSS MB':>9} {'file MB':>8}")
    base = [sys.executable, __file__, "--ids", str(args.ids), "--probe", str(args.probe),
            "--prune", str(args.prune), "--hot", str(args.hot), "--garbage", str(args.garbage),
            "--after", str(args.after)]
    variants = [("memory", "memory", None), ("file", "file", None)]
    if args.before:
        variants.append(("before", "file", args.before))
    for _ in range(args.rounds):
        for name, variant, root in variants:
            out = subprocess.run([*base, "--variant", variant, *(["--root", root] if root else [])],
                                 check=True, capture_output=True, text=True).stdout
            r = json.loads(out)
            print(f"{name:8} {r['fill_us']:8.2f} {r['full_us']:8.2f} {r['hit_us']:7.2f} "
                  f"{r['worst_set_ms']:12.1f} {r['prune_ms']:9.1f} {r['worst_after_ms']:14.1f} "
                  f"{r['slow']:6} {r['pruned']:8,} {r['hwm_mb']:9.1f} {r['rss_mb']:9.1f} "
                  f"{r['file_mb']:8.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
