#!/usr/bin/env python3
"""Adaptive speed benchmark matrix: does one controller, with the shipped knowledge base, find
providers' capacities that nobody told it, quickly and without earning a block?

Each case runs kmta's controller (``kmta/policy/speed.py``, the shipped ``[default.speed]``
rule) in a closed loop with a simulated provider (the sim's own ``ProviderRules``: a token
bucket of the given capacity per source IP, a "K throttles within 60 s -> blocked for 300 s"
rule, optionally a capacity change) and sender nodes pacing like ``senders/lane.py``; in
simulated time (``tests/speedloop.py``), so the matrix runs in a minute or two on 2 cores. The
live pipeline (Kafka, brain, sender over SMTP) is ``scripts/bench_adaptive_live.py``.

Per case it prints: seconds from the first delivery to 90 % of capacity (5 s window),
utilisation after that, attempts deferred (throttled or refused by a block), blocks earned,
throttle replies; for a capacity change, seconds until the allowed speed is back under a
halved capacity / until 90 % of a doubled one; for a restart, seconds until a 1 s window is
back at 80 %. It writes one PNG of speed (allowed) and delivered rate against capacity per case.

Usage::

    python -m tests.bench_adaptive [--quick] [--out artifacts/bench_adaptive.png]
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from kmta.policy.kb import KnowledgeBase
from tests.speedloop import LoopCase, LoopResult, run

ROOT = Path(__file__).resolve().parent.parent

TARGETS = "targets: t90 <= 60 s, util >= 95 %, deferred <= 2 %, blocks 0, follow <= 10 s " \
          "(halving) / <= 60 s (doubling), restart <= 5 s"


def matrix(quick: bool, block_after: int, duration: float, seed: int = 1,
           capacities: tuple[float, ...] | None = None, shared: bool = False,
           ip_cases: bool = False, burst_seconds: float | None = None) -> list[LoopCase]:
    rule = KnowledgeBase.load().effective("unknown.example").speed  # the shipped default
    if shared:  # one level for all source IPs of the ISP (speed.per_ip = false)
        rule = rule.model_copy(update={"per_ip": False})
    base = LoopCase(capacity=1, duration=duration, block_after=block_after, rule=rule,
                    seed=seed, burst_seconds=burst_seconds)
    caps = capacities or ((1, 10, 100) if not quick else (1, 40))
    ips = (1, 10) if not quick else (2,)
    nodes = (1, 4) if not quick else (1, 2)
    cases = [replace(base, capacity=c, ips=i, nodes=n) for c in caps for i in ips for n in nodes]
    mid = duration / 2
    for c, i, n in ((10, 2, 2), (100, 1, 1)) if not quick else ((40, 2, 1),):
        cases.append(replace(base, capacity=c, ips=i, nodes=n, change_at=mid, change_to=c / 2))
        cases.append(replace(base, capacity=c, ips=i, nodes=n, change_at=mid, change_to=c * 2))
        cases.append(replace(base, capacity=c, ips=i, nodes=n, restart_at=mid))
    if ip_cases:  # source IPs of one pool with different capacities: the first at half
        for c, i, n in ((1, 2, 1), (10, 2, 2), (100, 2, 4), (10, 10, 4)):
            cases.append(replace(base, capacity=c, ips=i, nodes=n, ip_capacity=(c / 2,)))
    return cases


def figures(r: LoopResult) -> dict[str, str]:
    c = r.case
    t90 = r.time_to(0.9)
    end = int(c.change_at) if c.change_at is not None else None
    util = r.utilisation(int(t90), end) if t90 is not None else 0.0
    out = {"case": c.label(), "t90": "never" if t90 is None else f"{t90:.0f}",
           "util": f"{util * 100:.1f}", "deferred": f"{r.deferral_share() * 100:.2f}",
           "blocks": str(r.blocks), "throttles": str(sum(r.throttled)), "after": ""}
    if c.change_at is not None and c.change_to is not None:
        at = int(c.change_at)
        if c.change_to < c.capacity:
            new = c.change_to * c.ips
            follow = next((t - at for t in range(at, len(r.allowed))
                           if r.allowed[t] <= new * 1.05), None)
            out["after"] = f"halved: speed under it after {follow} s" if follow is not None \
                else "halved: never followed"
        else:
            t = r.time_to(0.9, at)
            out["after"] = f"doubled: 90 % after {t:.0f} s" if t is not None \
                else "doubled: 90 % never reached"
    if c.ip_capacity:  # each IP against its own capacity: the slow one, then a full one
        start = int(t90) if t90 is not None else 60
        ips = list(r.ip_accepted)[:2]
        out["after"] = "per IP (slow / full): " + " / ".join(
            f"{r.ip_utilisation(ip, start) * 100:.1f} %" for ip in ips)
    if c.restart_at is not None:
        back = int(c.restart_at + c.restart_gap)
        t = r.time_to(0.8, back, 1)
        out["after"] = f"restart: 80 % after {t:.0f} s" if t is not None else "restart: never"
    return out


def plot(results: list[LoopResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = (len(results) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.6 * rows), squeeze=False)
    for ax, r in zip(axes.flat, results, strict=False):
        t = range(len(r.capacity))
        ax.plot(t, r.capacity, color="black", lw=1.2, label="capacity")
        ax.plot(t, r.allowed, color="tab:blue", lw=1.0, label="speed allowed")
        ax.plot(t, r.accepted, color="tab:green", lw=0.8, alpha=0.8, label="delivered")
        thr = [x for x in r.throttled]
        if any(thr):
            ax.bar(t, thr, color="tab:red", width=1.0, label="throttled")
        ax.set_title(r.case.label(), fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_ylim(0, max(max(r.capacity), max(r.allowed[5:] or [0])) * 1.3)
    for ax in list(axes.flat)[len(results):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="lower right")
    fig.supxlabel("seconds since the first delivery", fontsize=8)
    fig.supylabel("messages per second (all source IPs)", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small matrix (a few seconds)")
    ap.add_argument("--block-after", type=int, default=5,
                    help="the provider blocks after this many throttles within 60 s (5)")
    ap.add_argument("--duration", type=float, default=240.0, help="seconds per case (240)")
    ap.add_argument("--seed", type=int, default=1, help="the simulation's random seed (1)")
    ap.add_argument("--capacities", type=float, nargs="+", default=None,
                    help="capacities per source IP (msg/s) instead of the matrix's 1, 10, 100")
    ap.add_argument("--shared", action="store_true",
                    help="one speed level shared by an ISP's source IPs (speed.per_ip off)")
    ap.add_argument("--ip-cases", action="store_true",
                    help="add cases whose first source IP has half the others' capacity")
    ap.add_argument("--burst", type=float, default=None, metavar="S",
                    help="the providers' bucket depth in seconds of capacity (default: the "
                    "sim's, 1/4 s and at least one message)")
    ap.add_argument("--out", default=str(ROOT / "artifacts" / "bench_adaptive.png"))
    args = ap.parse_args(argv)
    cases = matrix(args.quick, args.block_after, args.duration, args.seed,
                   tuple(args.capacities) if args.capacities else None, args.shared,
                   args.ip_cases, args.burst)
    t0 = time.monotonic()
    results = []
    head = f"{'case':<58}{'t90 s':>7}{'util %':>8}{'defer %':>9}{'blocks':>8}{'thr':>7}  after"
    print(TARGETS)
    print(head)
    for case in cases:
        r = run(case)
        results.append(r)
        f = figures(r)
        print(f"{f['case']:<58}{f['t90']:>7}{f['util']:>8}{f['deferred']:>9}{f['blocks']:>8}"
              f"{f['throttles']:>7}  {f['after']}", flush=True)
    plot(results, Path(args.out))
    print(f"{len(cases)} cases in {time.monotonic() - t0:.0f} s; plot: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
