"""The speed controller in a closed loop with a simulated provider, in simulated time.

A discrete-event model of the pipeline around ``kmta.policy.speed``: sender nodes pace each
source IP with ``senders.pacing.Pacer`` (on the shared grid, like ``senders.lane``), slow an IP
locally on a throttle reply until the brain's lower speed arrives (``LOCAL_SLOW``), the
provider decides with the simulator's own ``ProviderRules`` (token bucket, block rule,
capacity changes), results reach the brain after a delay and the brain's speed reaches the
nodes after another. No sockets and no sleeps: a case of minutes runs in about a second, so the
benchmark matrix (``tests/bench_adaptive.py``) and the unit tests can run many of them. The
live pipeline (Kafka, brain, sender, sim over SMTP) is ``scripts/bench_adaptive_live.py``. It
lives with the tests: it joins the simulator, the policy core and the sender's pacer, which no
room below the tests may import together.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from kmta.policy.speed import Signal, SpeedState, initial, observe
from schemas.rules import SpeedRule
from sim.behaviour import ProviderBehaviour, ProviderRules

__all__ = ["LoopCase", "LoopResult", "run"]

LOCAL_SLOW = 0.3  # as senders/lane.py
LOCAL_SLOW_GRACE = 2.0
RAISE_DELAY = 0.3  # as senders/lane.py: a raise applies this long after the brain published


@dataclass(frozen=True)
class LoopCase:
    """One closed-loop run. Capacities are messages per second per source IP."""

    capacity: float
    ips: int = 1
    nodes: int = 1
    duration: float = 180.0
    block_after: int | None = None  # the provider's block rule: K throttles ...
    block_window: float = 60.0  # ... within this many seconds
    change_at: float | None = None  # seconds after the first delivery ...
    change_to: float | None = None  # ... the capacity becomes this
    restart_at: float | None = None  # sender nodes restart (the brain keeps its state)
    restart_gap: float = 2.0  # seconds without sending around a restart
    tact: float = 60.0
    rule: SpeedRule = field(default_factory=SpeedRule)
    request: float = 0.004  # seconds from a send slot to the provider's verdict (RCPT)
    reply: float = 0.002  # from the verdict back to the sender
    jitter: float = 0.003  # uniform extra on the request
    results: tuple[float, float] = (0.05, 0.2)  # reply -> brain (results written in batches)
    state: tuple[float, float] = (0.02, 0.15)  # brain -> node (state topic)
    seed: int = 1

    def label(self) -> str:
        out = f"cap {self.capacity:g}/s x {self.ips} IP x {self.nodes} node"
        if self.block_after:
            out += f", block {self.block_after}/{self.block_window:g}s"
        if self.change_at is not None:
            out += f", -> {self.change_to:g}/s at {self.change_at:g}s"
        if self.restart_at is not None:
            out += f", restart at {self.restart_at:g}s"
        return out


@dataclass
class LoopResult:
    """Per-second series from the first delivery (index 0 = [0, 1) s) and totals."""

    case: LoopCase
    capacity: list[float]  # the pool's capacity, msg/s
    accepted: list[int]
    throttled: list[int]
    allowed: list[float]  # the brain's speed for the pool, msg/s (sampled each second)
    attempts: int = 0
    blocks: int = 0
    blocked: int = 0  # attempts refused because a block was in force

    def window(self, start: int, width: int = 5) -> float:
        """Accepted share of capacity over [start, start + width)."""
        acc = sum(self.accepted[start:start + width])
        cap = sum(self.capacity[start:start + width])
        return acc / cap if cap else 0.0

    def time_to(self, share: float, after: int = 0, width: int = 5) -> float | None:
        """Seconds from ``after`` until a ``width`` s window first reaches ``share``."""
        for t in range(after, len(self.accepted) - width + 1):
            if self.window(t, width) >= share:
                return float(t + width - after)
        return None

    def utilisation(self, start: int, end: int | None = None) -> float:
        end = len(self.accepted) if end is None else end
        cap = sum(self.capacity[start:end])
        return sum(self.accepted[start:end]) / cap if cap else 0.0

    def deferral_share(self) -> float:
        return (sum(self.throttled) + self.blocked) / self.attempts if self.attempts else 0.0


class _Node:
    def __init__(self, index: int, case: LoopCase, ips: list[str], clock) -> None:
        from senders.pacing import Pacer

        self.index = index
        self.case = case
        self.speed: float | None = None  # the brain's speed, once received
        self.published = 0.0  # when the brain published it
        self.local_slow: dict[str, tuple[float, float]] = {}
        grid = (frozenset({index}), case.nodes) if case.nodes > 1 else None
        self.pacers = {ip: Pacer(0.0, clock=clock, grid=grid) for ip in ips}
        self.version = {ip: 0 for ip in ips}

    def rate(self, ip: str, now: float) -> float:
        if self.speed is None:
            return 0.0
        slow = self.local_slow.get(ip)
        if slow is not None and slow[0] + LOCAL_SLOW_GRACE <= now:
            del self.local_slow[ip]
            slow = None
        r = self.speed / self.case.tact / self.case.nodes
        return r * (LOCAL_SLOW if slow is not None else 1.0)


def run(case: LoopCase) -> LoopResult:
    """Run one case; the backlog never runs dry."""
    rng = random.Random(case.seed)
    now = 0.0
    changes: tuple[tuple[float, float], ...] = ()
    behaviour = ProviderBehaviour(capacity=case.capacity, block_after=case.block_after,
                                  block_window=case.block_window, capacity_changes=changes)
    provider = ProviderRules(behaviour)
    ips = [f"127.0.0.{i + 2}" for i in range(case.ips)]
    nodes = [_Node(i, case, ips, lambda: now) for i in range(case.nodes)]
    brain: SpeedState = initial(case.rule, 0.0)
    heap: list[tuple[float, int, str, tuple]] = []
    seq = 0

    def push(t: float, kind: str, data: tuple) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (t, seq, kind, data))

    # the state topic delivers a node its records in publish order (Kafka, per partition): a
    # record never overtakes an earlier one, whatever its own delay
    delivered_at = [0.0] * case.nodes

    def publish(t: float) -> None:
        for n in nodes:
            at = max(t + rng.uniform(*case.state), delivered_at[n.index])
            delivered_at[n.index] = at
            push(at, "state", (n.index, brain.speed, t))

    def wake(n: _Node, ip: str, t: float) -> None:
        n.version[ip] += 1
        p = n.pacers[ip]
        p.set_rate(n.rate(ip, t), n.published + RAISE_DELAY if case.nodes > 1 else None,
                   n.speed / case.tact / case.nodes if n.speed else None)
        if p.rate > 0 or p.pending:
            push(t + p.delay(), "slot", (n.index, ip, n.version[ip]))

    publish(0.0)
    first: float | None = None
    seconds = int(case.duration)
    accepted = [0] * seconds
    throttled = [0] * seconds
    allowed = [0.0] * seconds
    capacity = [0.0] * seconds
    attempts = blocked = 0
    down_until = -1.0
    restarted = False
    sampled = -1
    while heap:
        now, _, kind, data = heapq.heappop(heap)
        if first is not None and now - first >= case.duration:
            break
        if first is not None:
            sec = int(now - first)
            while sampled < sec:
                sampled += 1
                allowed[sampled] = brain.speed / case.tact * case.ips
        if kind == "state":
            i, speed, published = data
            n = nodes[i]
            n.speed, n.published = speed, published
            n.local_slow = {ip: v for ip, v in n.local_slow.items() if speed >= v[1]}
            for ip in ips:
                wake(n, ip, now)
        elif kind == "slot":
            i, ip, version = data
            n = nodes[i]
            if version != n.version[ip]:
                continue
            if now < down_until:
                push(down_until, "slot", data)
                continue
            if n.pacers[ip].delay() > 0:  # a pending raise applied, or not yet
                wake(n, ip, now)
                continue
            n.pacers[ip].take()
            attempts += 1
            push(now + case.request + rng.uniform(0, case.jitter), "verdict", (i, ip))
            wake(n, ip, now)
        elif kind == "verdict":
            i, ip = data
            verdict = provider.on_rcpt(ip, "bench@kmta.test", "user@bench.test", now)
            if verdict is None:
                provider.on_accepted(ip, 1)
                if first is None:
                    first = now
                    if case.change_at is not None and case.change_to is not None:
                        provider.behaviour = ProviderBehaviour(
                            capacity=case.capacity, block_after=case.block_after,
                            block_window=case.block_window,
                            capacity_changes=((case.change_at + now - provider._t0,
                                               case.change_to),))
            outcome = (Signal.CLEAN if verdict is None else
                       Signal.THROTTLE if verdict.event == "throttled" else Signal.LOCK)
            if first is not None:
                sec = int(now - first)
                if sec < seconds:
                    if verdict is None:
                        accepted[sec] += 1
                    elif verdict.event == "throttled":
                        throttled[sec] += 1
                    else:
                        blocked += 1
            push(now + case.reply, "reply", (i, ip, outcome))
        elif kind == "reply":
            i, ip, outcome = data
            n = nodes[i]
            if outcome is not Signal.CLEAN and ip not in n.local_slow and n.speed:
                n.local_slow[ip] = (now, n.speed)
                wake(n, ip, now)
            push(now + rng.uniform(*case.results), "result", (ip, outcome, now, i))
        elif kind == "result":
            ip, outcome, at, i = data
            before = brain.speed
            brain = observe(brain, outcome, case.rule, case.tact, min(at, now), ip, str(i))
            if brain.speed != before:
                publish(now)
        if (case.restart_at is not None and not restarted and first is not None
                and now - first >= case.restart_at):
            restarted = True
            down_until = now + case.restart_gap
            # the brain's row survives (changelog); the sender processes start from scratch
            for n in nodes:  # a new process: pacers and local state from scratch
                fresh = _Node(n.index, case, ips, lambda: now)  # noqa: B023 - the loop's clock
                n.pacers, n.local_slow = fresh.pacers, {}
                n.version = {ip: v + 1 for ip, v in n.version.items()}
            publish(down_until - 0.5)  # the state topic is read before the first send
    for s in range(seconds):
        t = (first or 0.0) + s + 0.5
        capacity[s] = (provider.capacity(t) or 0.0) * case.ips
    blocks = sum(c["blocks"] for c in provider.stats().values())
    return LoopResult(case, capacity, accepted, throttled, allowed, attempts, blocks, blocked)
