"""A lane: the messages of one ISP (and pool) on this node, and the connections serving them.

The lane enforces what the brain decided (pause, lock, speed, temporary connection caps) and the
ISP's sending rule, for this node's share of the ISP's partitions.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from kmta.policy.kb import EffectiveRule
from schemas import Envelope, IspState
from senders.pacing import Pacer, TactCounter

__all__ = ["Item", "Lane", "connection_share"]


@dataclass
class Item:
    env: Envelope
    partition: int
    offset: int
    requeued: bool = False


def connection_share(total: int, slot: int, k: int) -> int:
    """Connections partition ``slot`` of ``k`` may use out of ``total``: an exact split."""
    return total // k + (1 if slot < total % k else 0)


@dataclass
class Lane:
    isp: str
    pool: str | None
    rule: EffectiveRule
    source_ips: list[str | None]
    queue: deque[Item] = field(default_factory=deque)
    state: IspState | None = None
    ip_states: dict[str, IspState] = field(default_factory=dict)
    slots: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition -> (slot, k)
    conns: dict[str | None, int] = field(default_factory=dict)
    workers: int = 0
    in_flight: int = 0
    local_lock_until: float = 0.0
    connect_backoff_until: float = 0.0
    connect_failures: int = 0
    delivered: int = 0
    attempts: int = 0
    latency: float = 0.2  # seconds per SMTP transaction (moving average)

    def __post_init__(self) -> None:
        self.pacer = Pacer(self.rate_per_second())
        self.tact_conns = TactCounter(self.rule.sending.tact)
        self.tact_msgs = TactCounter(self.rule.sending.tact)

    # -- what the brain decided -------------------------------------------------------------
    def share(self) -> float:
        """This node's share of the ISP: owned partitions / the ISP's partitions."""
        if not self.slots:
            return 1.0
        k = next(iter(self.slots.values()))[1]
        return min(1.0, len(self.slots) / k)

    def speed(self) -> float:
        """Messages per tact for the whole ISP."""
        sp = self.rule.speed
        if self.state is not None and self.state.speed is not None:
            return self.state.speed
        return sp.start or sp.min

    def rate_per_second(self) -> float:
        return self.speed() * self.share() / self.rule.sending.tact

    def messages_per_tact(self) -> float:
        return self.speed() * self.share()

    def max_connections_per_ip(self) -> int:
        total = self.rule.sending.max_connections
        if self.state is not None and self.state.max_connections:
            total = min(total, self.state.max_connections)
        if not self.slots:
            return total
        return sum(connection_share(total, s, k) for s, k in self.slots.values())

    def connections_per_tact(self) -> float | None:
        cpt = self.rule.sending.connections_per_tact
        return None if cpt is None else max(1.0, cpt * self.share())

    def blocked_until(self, now: float) -> float | None:
        """When sending may start again (None = not blocked; inf = paused until resumed)."""
        st = self.state
        if st is not None and st.paused:
            return float("inf")
        until = self.local_lock_until if self.local_lock_until > now else None
        if st is not None and st.locked(now):
            until = max(until or 0.0, st.locked_until or 0.0)
        if all(self.ip_blocked(ip, now) for ip in self.source_ips):
            until = max(until or 0.0, now + 5.0)
        return until

    def ip_blocked(self, ip: str | None, now: float) -> bool:
        st = self.ip_states.get(ip or "")
        return st is not None and (st.paused or st.locked(now))

    def cleared(self, env: Envelope) -> bool:
        cb = self.state.clear_before if self.state is not None else None
        return cb is not None and env.accepted_at <= cb

    def refresh(self) -> None:
        self.pacer.rate = self.rate_per_second()

    # -- connection slots -------------------------------------------------------------------
    def pick_ip(self, now: float) -> str | None | bool:
        """A source IP with a free connection slot, or False when none has one."""
        cap = self.max_connections_per_ip()
        best: str | None | bool = False
        for ip in self.source_ips:
            if self.ip_blocked(ip, now):
                continue
            used = self.conns.get(ip, 0)
            if used < cap and (best is False or used < self.conns.get(best, 0)):
                best = ip
        return best

    def wanted_workers(self) -> int:
        """As many connections as the allowed rate keeps busy (rate x transaction time), never
        more than the backlog needs: few, busy connections look like careful sending."""
        if not self.queue:
            return 0
        by_rate = int(self.rate_per_second() * self.latency * 1.5) + 1
        return max(1, min(len(self.queue), by_rate))

    def observe_latency(self, seconds: float) -> None:
        self.latency = 0.8 * self.latency + 0.2 * max(seconds, 0.001)

    def now(self) -> float:
        return time.time()
