#!/usr/bin/env python3
"""Adaptive speed benchmark: does kmta find a provider's capacity that nobody told it?

One simulated provider accepts ``--capacity`` messages per second per source IP (a token bucket
with the sim's default burst) and answers ``421 4.7.0 ... rate limited`` beyond it. kmta's rules
for it allow far more (speed max ``--max-speed`` per source IP); the sender pool has two source
IPs, so the provider's capacity for the pool is ``2 x --capacity``. The benchmark

1. sends a backlog far larger than the phase can deliver and measures, from the sim's own log,
   the delivered rate per second, the share of attempts that were throttled, and when the rate
   first reached 90 % of capacity (phase 1);
2. stops the worker and the sender, starts them again, and measures how fast the delivered rate
   is back at 80 % of capacity (the learned speed must survive the restart);
3. prints the figures as a table with ratios against the targets, and saves a plot of the
   allowed speed, the delivered rate and the throttled rate over time (a PNG drawn by
   matplotlib).

Not a test: figures depend on the machine. Usage::

    python scripts/bench_adaptive_live.py [--capacity 25] [--phase1 100] [--out artifacts/...]

A broker is started for the run unless ``--bootstrap`` (or ``KMTA_TEST_BOOTSTRAP``) names one.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ops.deployment import Pipeline
from ops.kit import start_broker, wait_for

ROOT = Path(__file__).resolve().parent.parent

ISP = "bench"
DOMAIN = "bench.test"
SOURCE_IPS = ["127.0.0.2", "127.0.0.3"]


def scenario(capacity: float, latency: float) -> str:
    return f"""
[dns]
ttl = 3600

[[provider]]
name = "{ISP}"
profile = "generic"
ip = "127.0.1.1"
domains = ["{DOMAIN}"]
[provider.behaviour]
capacity = {capacity}
max_connections = 30
latency = {latency}
"""


def rules(max_speed: float, start: float) -> dict:
    sending = {"tact": "1s", "max_connections": 10, "connections_per_tact": 20,
               "messages_per_connection": 10000}
    speed = {"min": 1, "max": max_speed, "start": start, "increase": 0.05, "decrease": 0.88}
    retry = {"mode": "fixed", "interval": "5s", "max_attempts": 50, "max_age": "1h"}
    return {"default": {"sending": sending, "speed": speed, "retry": retry},
            "isp": {ISP: {"domains": [DOMAIN], "mx": [f"mx.{DOMAIN}"], "partitions": 1,
                          "sending": sending, "speed": speed, "retry": retry}}}


# -- watching the state topic as a sender does ---------------------------------------------
@dataclass
class StateTail:
    """Tails the state topic in a thread; records (receive time, speed, updated_at)."""

    pipeline: Pipeline
    speeds: list[tuple[float, float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from kmta.pipeline.kafkaio import client_options, topic_partitions
        cfg = self.pipeline.config
        c = AIOKafkaConsumer(**client_options(cfg),
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             fetch_max_wait_ms=100)
        await c.start()
        try:
            tps = await topic_partitions(cfg, [cfg.topic("state")])
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            while not self._stop.is_set():
                batch = await c.getmany(timeout_ms=200)
                now = time.time()
                for recs in batch.values():
                    for r in recs:
                        if r.key != ISP.encode() or r.value is None:
                            continue
                        st = json.loads(r.value)
                        if st.get("speed") is not None:
                            self.speeds.append((now, float(st["speed"]), st["updated_at"]))
        finally:
            await c.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def speed_at(self, t: float) -> float | None:
        last = None
        for recv, speed, _ in self.speeds:
            if recv > t:
                break
            last = speed
        return last


# -- what the provider saw ------------------------------------------------------------------
@dataclass
class Seconds:
    """Per-second counts of the sim's events for the bench provider."""

    start: float
    accepted: list[int]
    throttled: list[int]
    refused: list[int]
    connects: list[int]

    @classmethod
    def from_events(cls, events: list[dict], start: float, end: float) -> Seconds:
        n = max(1, int(end - start) + 1)
        out = cls(start, [0] * n, [0] * n, [0] * n, [0] * n)
        for e in events:
            if e.get("provider") != ISP:
                continue
            i = int(e["time"] - start)
            if not 0 <= i < n:
                continue
            kind = e["event"]
            if kind == "accepted":
                out.accepted[i] += 1
            elif kind == "throttled":
                out.throttled[i] += 1
            elif kind in ("refuse", "blocked", "deferred"):
                out.refused[i] += 1
            elif kind == "connect":
                out.connects[i] += 1
        return out

    def rate(self, a: int, b: int) -> float:
        """Accepted per second over seconds [a, b)."""
        return sum(self.accepted[a:b]) / max(b - a, 1)

    def deferred_share(self, a: int, b: int) -> float:
        acc = sum(self.accepted[a:b])
        bad = sum(self.throttled[a:b]) + sum(self.refused[a:b])
        return bad / max(acc + bad, 1)

    def first_window(self, threshold: float, width: int, after: int = 0) -> int | None:
        """First second s >= after whose window [s, s+width) averages >= threshold."""
        for s in range(after, len(self.accepted) - width + 1):
            if self.rate(s, s + width) >= threshold:
                return s
        return None


def first_event(events: list[dict], kind: str, after: float) -> float | None:
    times = [e["time"] for e in events
             if e.get("provider") == ISP and e["event"] == kind and e["time"] >= after]
    return min(times) if times else None


# -- the plot -------------------------------------------------------------------------------
def save_plot(series: dict[str, list[tuple[float, float]]], capacity: float,
              marks: dict[str, float], out: Path) -> Path:
    """The run as a PNG (matplotlib, a test dependency; kaleido would need a browser build)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5))
    for name, pts in series.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name,
                drawstyle="steps-post" if "speed" in name else "default")
    ax.axhline(capacity, linestyle="--", color="grey", label="capacity")
    for label, x in marks.items():
        ax.axvline(x, linestyle=":", color="black")
        ax.text(x, ax.get_ylim()[1] * 0.95, label)
    ax.set_xlabel("seconds")
    ax.set_ylabel("messages / s")
    ax.set_title("kmta adaptive speed vs an undisclosed provider capacity")
    ax.legend()
    png = out.with_suffix(".png")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


# -- the run --------------------------------------------------------------------------------
def queued(p: Pipeline) -> int:
    """Records on the queue topic (end offsets)."""
    from aiokafka import AIOKafkaConsumer

    from kmta.pipeline.kafkaio import client_options, topic_partitions

    async def go() -> int:
        c = AIOKafkaConsumer(**client_options(p.config))
        await c.start()
        try:
            tps = await topic_partitions(p.config, [p.config.topic("queue")])
            return sum((await c.end_offsets(tps)).values())
        finally:
            await c.stop()
    return asyncio.run(go())


def messages(n: int) -> list[dict]:
    return [{"from": "bench@kmta.test", "to": f"rcpt{i}@{DOMAIN}", "subject": f"bench {i}",
             "text": f"adaptive speed benchmark message {i}\n"} for i in range(n)]


def row(name: str, target: str, value: str, ratio: float | None, ok: bool | None) -> str:
    r = f"{ratio:6.2f}" if ratio is not None else "     -"
    verdict = {True: "ok", False: "MISSED", None: ""}[ok]
    return f"| {name:<44} | {target:>10} | {value:>10} | {r} | {verdict:<6} |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--capacity", type=float, default=25.0,
                    help="sim capacity, messages/s per source IP (kmta is not told)")
    ap.add_argument("--max-speed", type=float, default=1000.0,
                    help="kmta's speed max, messages/s per source IP")
    ap.add_argument("--start-speed", type=float, default=5.0)
    ap.add_argument("--latency", type=float, default=0.005, help="sim delay per SMTP reply")
    ap.add_argument("--phase1", type=float, default=100.0, help="seconds before the restart")
    ap.add_argument("--phase2", type=float, default=30.0, help="seconds after the restart")
    ap.add_argument("--kill", action="store_true", help="restart with SIGKILL, not SIGTERM")
    ap.add_argument("--bootstrap", default=os.environ.get("KMTA_TEST_BOOTSTRAP"))
    ap.add_argument("--out", default=str(ROOT / "artifacts" / "bench_adaptive_live.png"))
    ap.add_argument("--keep", action="store_true", help="keep the run directory")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="kmta-bench-adaptive-"))
    broker_dir = None
    bootstrap = args.bootstrap
    if not bootstrap:
        print("starting a Kafka broker ...", flush=True)
        broker_dir = tmp / "kafka"
        bootstrap = start_broker(broker_dir)
    cap_total = args.capacity * len(SOURCE_IPS)
    (tmp / "run").mkdir()
    p = Pipeline(bootstrap, tmp / "run", scenario=scenario(args.capacity, args.latency),
                 rules=rules(args.max_speed, args.start_speed),
                 pools=[{"name": "default", "source_ips": SOURCE_IPS}])
    tail = StateTail(p)
    try:
        p.start_sim()
        p.start_worker()
        tail.start()
        n = int(cap_total * (args.phase1 + args.phase2 + 40))
        print(f"producing {n} messages to {DOMAIN} (capacity {args.capacity:g}/s per source IP"
              f" x {len(SOURCE_IPS)} IPs = {cap_total:g}/s; kmta speed max "
              f"{args.max_speed:g}/s per IP) ...", flush=True)
        p.produce(messages(n))
        # a backlog waiting for the sender: route it first, so that what is measured is the
        # speed controller, not the worker's routing of the burst
        wait_for(lambda: queued(p) >= n, 180, "the backlog to be routed", interval=1.0)
        p.start_sender("sender-1")
        t0 = wait_for(lambda: first_event(p.sim_events(), "connect", 0), 60, "first connection")
        print(f"sending; phase 1 runs {args.phase1:g} s", flush=True)
        time.sleep(max(0.0, t0 + args.phase1 - time.time()))

        # -- full restart: worker and sender ------------------------------------------------
        sig = signal.SIGKILL if args.kill else signal.SIGTERM
        t_stop = time.time()
        speed_before = tail.speed_at(t_stop)
        p.stop("sender-1", sig)
        p.stop("worker", sig)
        t_stopped = time.time()
        print(f"stopped worker and sender in {t_stopped - t_stop:.1f} s (speed was "
              f"{speed_before}); starting them again", flush=True)
        t_launch = time.time()
        p.start_worker()
        p.start_sender("sender-1")
        t_resume = wait_for(lambda: first_event(p.sim_events(), "accepted", t_stopped), 60,
                            "delivery after the restart")
        time.sleep(max(0.0, t_resume + args.phase2 - time.time()))
        t_end = time.time()
        time.sleep(0.5)  # the sim log flushes every 0.1 s
    finally:
        tail.stop()
        p.close()
        if broker_dir is not None:
            from ops.kafka import manager
            manager.stop(broker_dir)

    events = p.sim_events()
    sec = Seconds.from_events(events, t0, t_end)
    end1 = int(t_stop - t0)
    conv = sec.first_window(0.9 * cap_total, 5)
    steady_from = conv if conv is not None else end1
    steady_rate = sec.rate(steady_from, end1)
    steady_deferred = sec.deferred_share(steady_from, end1)
    worst5 = min((sec.rate(s, s + 5) for s in range(steady_from, max(end1 - 4, steady_from + 1))),
                 default=0.0)
    r_idx = int(t_resume - t0)
    rate_first5 = sec.rate(r_idx, r_idx + 5)
    reach80 = sec.first_window(0.8 * cap_total, 1, after=r_idx)
    after_deferred = sec.deferred_share(r_idx, r_idx + int(args.phase2))
    speed_after = tail.speed_at(t_resume + 1)
    launch_to_first = t_resume - t_launch

    lines = [
        f"capacity: {args.capacity:g} msgs/s per source IP x {len(SOURCE_IPS)} source IPs = "
        f"{cap_total:g} msgs/s (kmta's speed max: {args.max_speed:g} per IP, start "
        f"{args.start_speed:g})",
        "| metric                                       |     target |   measured | ratio  |"
        " result |",
        "|----------------------------------------------|-----------:|-----------:|-------:|"
        "--------|",
        row("time to 90% of capacity (5 s window)", "<= 60 s",
            f"{conv} s" if conv is not None else "never", (conv / 60) if conv is not None
            else None, conv is not None and conv <= 60),
        row("delivered rate after convergence", f">= {0.9 * cap_total:.1f}/s",
            f"{steady_rate:.1f}/s", steady_rate / cap_total, steady_rate >= 0.9 * cap_total),
        row("worst 5 s window after convergence", "", f"{worst5:.1f}/s", worst5 / cap_total,
            None),
        row("attempts deferred after convergence", "<= 5 %", f"{steady_deferred:.1%}",
            steady_deferred / 0.05, steady_deferred <= 0.05),
        row("restart: rate in first 5 s of sending", f">= {0.8 * cap_total:.1f}/s",
            f"{rate_first5:.1f}/s", rate_first5 / cap_total, rate_first5 >= 0.8 * cap_total),
        row("restart: time to a 1 s window >= 80%", "<= 5 s",
            f"{reach80 - r_idx} s" if reach80 is not None else "never",
            None, reach80 is not None and reach80 - r_idx <= 5),
        row("restart: process launch to first delivery", "", f"{launch_to_first:.1f} s", None,
            None),
        row("restart: attempts deferred after restart", "<= 5 %", f"{after_deferred:.1%}",
            after_deferred / 0.05, after_deferred <= 0.05),
        row("speed per IP before stop / after restart", "", f"{speed_before}/{speed_after}",
            (speed_after / speed_before) if speed_before and speed_after else None, None),
    ]
    print("\n".join(lines))
    # throttle reaction: from a throttle at the provider to a lower speed seen on the topic
    lat = reaction_latencies(events, tail.speeds, t0, 1.0)
    if lat:
        lat.sort()
        print(f"throttle -> lower speed on the state topic (as a sender sees it): median "
              f"{lat[len(lat) // 2]:.2f} s, max {lat[-1]:.2f} s over {len(lat)} decreases")
    series = {
        "allowed speed (pool, msgs/s)": [(r - t0, s * len(SOURCE_IPS)) for r, s, _ in tail.speeds
                                         if t0 - 5 <= r <= t_end],
        # the last second is cut short by the end of the run: left out
        "delivered / s": [(i + 0.5, v) for i, v in enumerate(sec.accepted[:-1])],
        "throttled / s": [(i + 0.5, v) for i, v in enumerate(sec.throttled[:-1])],
    }
    marks = {"restart": t_stop - t0}
    if conv is not None:
        marks["90%"] = conv
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    saved = save_plot(series, cap_total, marks, out)
    (out.with_suffix(".txt")).write_text("\n".join(lines) + "\n")
    print(f"plot: {saved}")
    if args.keep:
        print(f"run directory: {tmp}")
    else:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def reaction_latencies(events: list[dict], speeds: list[tuple[float, float, float]],
                       t0: float, period: float) -> list[float]:
    """For each decrease seen on the state topic, the time since the throttle that triggered
    it: as the brain does, the first throttle at least one decision period after the previous
    trigger (the sim logs the throttle moments before the sender's result carries it)."""
    throttles = sorted(e["time"] for e in events
                       if e.get("provider") == ISP and e["event"] == "throttled")
    out = []
    prev_speed, last = None, float("-inf")
    for recv, speed, _ in speeds:
        if prev_speed is not None and speed < prev_speed and recv >= t0:
            trigger = next((t for t in throttles if last + period <= t <= recv), None)
            if trigger is not None:
                out.append(recv - trigger)
                last = trigger
        prev_speed = speed
    return out


if __name__ == "__main__":
    sys.exit(main())
