#!/usr/bin/env python3
"""A lane's per-message "may send" checks alone, this tree against another (``--compare``).

Per message a sender asks its lane, in this order: the intake's ``blocked_until`` before
queueing it, the kick's ``blocked_until`` and ``wanted_workers`` (its rate), and the
dispatcher's ``_open`` three times (the worker loop, ``may_follow`` for a message riding
behind the previous one, ``still_open`` before its body). This times that sequence on a lane
of one ISP with ``--ips`` source IPs and a brain state, nothing changing meanwhile (the common
case: a state arrives some times a second, messages by the thousand). ``--changing``: the lane
changes before every message (``Lane.changed``, as a new state does), so every message computes
the cached answer (``_Gate``) afresh: the cost of building it.

    python scripts/bench_lane_gate.py --compare main=/work/main --rounds 3

Each tree runs in a child process of its own, the trees one after the other, ``--rounds``
times; printed: CPU ns a message per tree and round, and the ratio of the medians.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(ips: int, messages: int, changing: bool = False) -> float:
    """CPU ns per message of the check sequence, in the tree on ``sys.path``."""
    from kmta.policy.kb import KnowledgeBase
    from schemas import IspState
    from senders.dispatch import Dispatcher
    from senders.lane import Lane

    kb = KnowledgeBase.load()
    source: list[str | None] = [f"127.0.0.{i + 2}" for i in range(ips)]
    lane = Lane("gmail", "p", kb.effective("gmail"), source, pool_name="p")
    now = time.time()
    lane.brain_state(IspState(isp="gmail", speed=600.0, updated_at=now), now)
    lane.refresh()
    lane.slots = {0: (0, 2), 1: (1, 2)}
    lane.refresh()
    ip = source[0]
    lane.conns[ip] = 1
    is_open = Dispatcher._open
    t0 = time.process_time()
    for _ in range(messages):
        t = time.time()
        if changing:
            lane.changed()
        lane.blocked_until(t)  # intake
        lane.blocked_until(t)  # kick
        lane.rate_per_second()  # kick: wanted_workers
        is_open(lane, ip)  # worker loop
        is_open(lane, ip)  # may_follow
        is_open(lane, ip)  # still_open
    return (time.process_time() - t0) / messages * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ips", type=int, default=4)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--changing", action="store_true",
                    help="the lane changes before every message (the cached answer rebuilt)")
    ap.add_argument("--compare", metavar="NAME=DIR", help="another tree, e.g. main=/work/main")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.ips, a.messages, a.changing)))
        return
    trees = {"this": ROOT}
    if a.compare:
        name, _, d = a.compare.partition("=")
        trees[name] = Path(d)
    runs: dict[str, list[float]] = {n: [] for n in trees}
    for r in range(a.rounds):
        for name, d in trees.items():
            env = {**os.environ, "PYTHONPATH": str(d)}
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child",
                                  "--ips", str(a.ips), "--messages", str(a.messages),
                                  *(["--changing"] if a.changing else [])],
                                 env=env, cwd=d, check=True, capture_output=True, text=True)
            runs[name].append(float(out.stdout))
            print(f"round {r + 1} {name:>6}: {runs[name][-1]:8.0f} CPU ns/message")
    med = {n: statistics.median(v) for n, v in runs.items()}
    for n, m in med.items():
        print(f"median {n:>6}: {m:8.0f} CPU ns/message")
    if a.compare:
        other = next(n for n in trees if n != "this")
        print(f"this / {other}: {med['this'] / med[other]:.3f}")


if __name__ == "__main__":
    main()
