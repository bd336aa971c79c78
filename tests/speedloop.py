"""The speed controller in a closed loop with a simulated provider, in simulated time.

A discrete-event model of the pipeline around ``kmta.policy.speed``: sender nodes pace each
source IP with ``senders.pacing.Pacer`` (on the shared grid, like ``senders.lane``), slow an IP
locally on a throttle reply until the brain answers (``LOCAL_SLOW``, ``slow_holds``), the
provider decides with the simulator's own ``ProviderRules`` (token bucket, block rule,
capacity changes, optionally a capacity per source IP), results reach the brain after a delay
and the brain's speed reaches the nodes after another, in publish order. With the rule's
``per_ip`` (the default) the brain keeps a level per source IP and publishes each IP's record
and the ISP's (the lowest), as ``streams/brain.py`` does; the nodes pace each IP at its own. No sockets and no sleeps: a case of minutes runs in about a second, so the
benchmark matrix (``tests/bench_adaptive.py``) and the unit tests can run many of them. The
live pipeline (Kafka, brain, sender, sim over SMTP) is ``scripts/bench_adaptive_live.py``. It
lives with the tests: it joins the simulator, the policy core and the sender's pacer, which no
room below the tests may import together.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from kmta.policy.ipspeed import for_new_ip, lowest
from kmta.policy.speed import Signal, SpeedState, initial, observe
from schemas.rules import SpeedRule

# the sender's own constants: a raise applies RAISE_DELAY after the brain published it; a
# throttle reply slows the IP to LOCAL_SLOW of its rate until the brain answers (slow_holds);
# the slow-down and its throttle count as Lane.note_throttle keeps them (slowed)
from senders.lane import LOCAL_SLOW, LOCAL_SLOW_GRACE, RAISE_DELAY, Slow, slow_holds, slowed
from sim.behaviour import ProviderBehaviour, ProviderRules

__all__ = ["LoopCase", "LoopResult", "run"]



@dataclass(frozen=True)
class LoopCase:
    """One closed-loop run. Capacities are messages per second per source IP."""

    capacity: float
    ips: int = 1
    # capacities of the first source IPs, msg/s (the others: ``capacity``); with
    # ``rule.per_ip`` the brain keeps a level per source IP, as streams/brain.py
    ip_capacity: tuple[float, ...] = ()
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
    # the provider's token-bucket depth in seconds of its capacity (None: the sim's default,
    # max(1 message, 1/4 s)); a deep bucket (a per-minute count) lets an excess pass for long
    burst_seconds: float | None = None

    def label(self) -> str:
        out = f"cap {self.capacity:g}/s x {self.ips} IP x {self.nodes} node"
        if self.ip_capacity:
            out += f" (IPs {'/'.join(f'{c:g}' for c in self.ip_capacity)}/s)"
        if not self.rule.per_ip:
            out += ", shared level"
        if self.burst_seconds is not None:
            out += f", burst {self.burst_seconds:g}s"
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
    ip_accepted: dict[str, list[int]] = field(default_factory=dict)  # per source IP, per s
    ip_capacity: dict[str, list[float]] = field(default_factory=dict)

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

    def ip_utilisation(self, ip: str, start: int, end: int | None = None) -> float:
        """Accepted share of source IP ``ip``'s own capacity over [start, end)."""
        end = len(self.accepted) if end is None else end
        cap = sum(self.ip_capacity[ip][start:end])
        return sum(self.ip_accepted[ip][start:end]) / cap if cap else 0.0

    def deferral_share(self) -> float:
        return (sum(self.throttled) + self.blocked) / self.attempts if self.attempts else 0.0


class _Node:
    def __init__(self, index: int, case: LoopCase, ips: list[str], clock) -> None:
        from senders.pacing import Pacer

        self.index = index
        self.case = case
        self.speed: float | None = None  # the brain's speed (the ISP's record), once received
        self.published = 0.0  # when the brain published it
        self.own: dict[str, tuple[float, float]] = {}  # IP -> its own level, published at
        self.local_slow: dict[str, Slow] = {}  # as Lane.local_slow
        grid = (frozenset({index}), case.nodes) if case.nodes > 1 else None
        self.pacers = {ip: Pacer(0.0, clock=clock, grid=grid) for ip in ips}
        self.version = {ip: 0 for ip in ips}

    def speed_of(self, ip: str) -> tuple[float | None, float]:
        """The speed ``ip`` paces at and when the brain published it (as senders/lane.py)."""
        return self.own.get(ip, (self.speed, self.published))

    def rate(self, ip: str, now: float) -> float:
        speed = self.speed_of(ip)[0]
        if speed is None:
            return 0.0
        slow = self.local_slow.get(ip)
        if slow is not None and slow[0] + LOCAL_SLOW_GRACE <= now:
            del self.local_slow[ip]
            slow = None
        r = speed / self.case.tact / self.case.nodes
        return r * (LOCAL_SLOW if slow is not None else 1.0)


def run(case: LoopCase) -> LoopResult:
    """Run one case; the backlog never runs dry."""
    rng = random.Random(case.seed)
    # the state topic's delays from a stream of their own: a level per IP publishes more
    # records, which must not shift every other random draw of the run
    state_rng = random.Random(f"{case.seed}/state")
    now = 0.0
    changes: tuple[tuple[float, float], ...] = ()
    ips = [f"127.0.0.{i + 2}" for i in range(case.ips)]
    own_capacity = tuple(zip(ips, case.ip_capacity, strict=False))
    burst = (max(1.0, case.capacity * case.burst_seconds)
             if case.burst_seconds is not None else None)
    behaviour = ProviderBehaviour(capacity=case.capacity, block_after=case.block_after,
                                  block_window=case.block_window, capacity_changes=changes,
                                  ip_capacity=own_capacity, burst=burst)
    provider = ProviderRules(behaviour)
    nodes = [_Node(i, case, ips, lambda: now) for i in range(case.nodes)]
    # the shared level (per_ip off); as in streams/brain.py, a level starts with the first
    # result (before it, the nodes send at the rule's start)
    brain: SpeedState = initial(case.rule, 0.0)
    started = False
    levels: dict[str, SpeedState] = {}  # per_ip: each source IP's level

    def isp_speed() -> float:
        if not case.rule.per_ip:
            return brain.speed
        low = lowest(s.speed for s in levels.values())
        return brain.speed if low is None else low
    heap: list[tuple[float, int, str, tuple]] = []
    seq = 0

    def push(t: float, kind: str, data: tuple) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (t, seq, kind, data))

    # the state topic delivers a node its records in publish order (Kafka, per partition): a
    # record never overtakes an earlier one, whatever its own delay
    delivered_at = [0.0] * case.nodes

    def publish(t: float, keys: tuple[str | None, ...] = (None,)) -> None:
        """Publish the records of ``keys`` in one batch (as the brain sends an event's
        records): the ISP's (None) and source IPs' own levels."""
        records = tuple((k, isp_speed() if k is None else levels[k].speed) for k in keys)
        for n in nodes:
            at = max(t + state_rng.uniform(*case.state), delivered_at[n.index])
            delivered_at[n.index] = at
            for key, speed in records:
                push(at, "state", (n.index, speed, t, key))

    def wake(n: _Node, ip: str, t: float) -> None:
        n.version[ip] += 1
        p = n.pacers[ip]
        speed, published = n.speed_of(ip)
        p.set_rate(n.rate(ip, t), published + RAISE_DELAY if case.nodes > 1 else None,
                   speed / case.tact / case.nodes if speed else None)
        if p.rate > 0 or p.pending:
            push(t + p.delay(), "slot", (n.index, ip, n.version[ip]))

    publish(0.0)
    first: float | None = None
    seconds = int(case.duration)
    accepted = [0] * seconds
    throttled = [0] * seconds
    allowed = [0.0] * seconds
    capacity = [0.0] * seconds
    ip_accepted = {ip: [0] * seconds for ip in ips}
    ip_cap = {ip: [0.0] * seconds for ip in ips}
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
                allowed[sampled] = (sum(levels[ip].speed if ip in levels else isp_speed()
                                        for ip in ips) if case.rule.per_ip
                                    else brain.speed * case.ips) / case.tact
        if kind == "state":
            i, speed, published, key = data
            n = nodes[i]
            if key is None:
                n.speed, n.published = speed, published
                n.local_slow = {ip: v for ip, v in n.local_slow.items()
                                if slow_holds(speed, *v[1:]) or ip in n.own}
            else:
                n.own[key] = (speed, published)
                if key in n.local_slow and not slow_holds(speed, *n.local_slow[key][1:]):
                    del n.local_slow[key]
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
                            block_window=case.block_window, burst=burst,
                            capacity_changes=((case.change_at + now - provider._t0,
                                               case.change_to),))
            outcome = (Signal.CLEAN if verdict is None else
                       Signal.THROTTLE if verdict.event == "throttled" else Signal.LOCK)
            if first is not None:
                sec = int(now - first)
                if sec < seconds:
                    if verdict is None:
                        accepted[sec] += 1
                        ip_accepted[ip][sec] += 1
                    elif verdict.event == "throttled":
                        throttled[sec] += 1
                    else:
                        blocked += 1
            push(now + case.reply, "reply", (i, ip, outcome))
        elif kind == "reply":
            i, ip, outcome = data
            n = nodes[i]
            speed = n.speed_of(ip)[0]
            slow = n.local_slow.get(ip)
            # a throttle as Lane.note_throttle; the loop has no local locks: a block's reply
            # slows an IP not slowed yet in their stead (and counts no throttle)
            if ((outcome is Signal.THROTTLE or (outcome is Signal.LOCK and slow is None))
                    and (slow is not None or speed)):
                n.local_slow[ip] = slowed(slow, speed or 0.0, now)
                if slow is None:
                    wake(n, ip, now)
            push(now + rng.uniform(*case.results), "result", (ip, outcome, now, i))
        elif kind == "result":
            ip, outcome, at, i = data
            if case.rule.per_ip:
                low = isp_speed()
                old = levels.get(ip)
                level = old if old is not None else for_new_ip(levels, case.rule, now)
                levels[ip] = observe(level, outcome, case.rule, case.tact, min(at, now), ip,
                                     str(i))
                keys: tuple[str | None, ...] = ()
                if old is None or levels[ip].speed != old.speed:
                    keys = (ip,)
                if isp_speed() != low:
                    keys = (*keys, None)
                if keys:
                    publish(now, keys)
            else:
                if not started:
                    brain, started = initial(case.rule, now), True
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
            # the state topic is read before the first send
            publish(down_until - 0.5, (None, *levels))
    for s in range(seconds):
        t = (first or 0.0) + s + 0.5
        for ip in ips:
            ip_cap[ip][s] = provider.capacity(t, ip) or 0.0
        capacity[s] = sum(ip_cap[ip][s] for ip in ips)
    blocks = sum(c["blocks"] for c in provider.stats().values())
    return LoopResult(case, capacity, accepted, throttled, allowed, attempts, blocks, blocked,
                      ip_accepted, ip_cap)
