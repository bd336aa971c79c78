"""What a simulated provider decides, apart from the SMTP protocol.

:class:`ProviderRules` answers "what reply does this command get" from the behaviour settings, the
per-source-IP state and a ``now`` passed in by the caller (no clock reads, no I/O), so its tests
move time by hand. ``None`` from a decision means "accept".
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kmta.errors import ConfigError
from sim.profiles import REPLY_KINDS, profile_replies

__all__ = ["ProviderBehaviour", "ProviderRules", "SourceCounters", "Verdict"]


@dataclass(frozen=True)
class ProviderBehaviour:
    """How a simulated provider treats senders. Every limit is optional (``None`` = unlimited).

    Limits count per source IP (the client's peer address), as real providers do.
    """

    profile: str = "generic"
    capacity: float | None = None  # accepted messages per second per source IP
    # source IPs with a capacity of their own (a worse reputation, a provider rating per IP):
    # {ip: msg/s}, or ((ip, msg/s), ...); capacity_changes scale them by the same factor
    ip_capacity: tuple[tuple[str, float], ...] = ()
    burst: float | None = None  # token-bucket depth; default max(1, capacity / 4)
    throttle_at: str = "rcpt"  # "rcpt" or "data": where an over-capacity message is refused
    max_connections: int | None = None  # concurrent connections per source IP
    messages_per_connection: int | None = None
    block_after: int | None = None  # this many throttle replies within block_window ...
    block_window: float = 60.0
    block_duration: float = 300.0  # ... block the source IP for this long
    block_at: str = "rcpt"  # "connect" (refuse sessions) or "rcpt" (refuse recipients)
    # a mid-run capacity change (a reputation drop or rise): ((after_seconds, capacity), ...),
    # seconds counted from the first command the provider sees
    capacity_changes: tuple[tuple[float, float], ...] = ()
    unknown_users: tuple[str, ...] = ("unknown",)  # local-part prefixes answered 550 5.1.1
    full_mailboxes: tuple[str, ...] = ("full",)  # local-part prefixes answered 452 4.2.2
    greylist_seconds: float | None = None
    # what a greylist triplet keys the client by: "subnet", its /24 (postgrey's default,
    # --lookup-by-subnet: a sender's retry from a neighbouring address of its pool passes), or
    # "ip" (postgrey --lookup-by-host: every source IP waits out the delay on its own)
    greylist_by: str = "subnet"
    tempfail_prefix: str = "tempfail"  # first attempt per recipient gets 451 4.3.0
    reject_prefix: str = "reject"  # message refused 554 5.7.1 after DATA
    slow_prefix: str = "slow"  # DATA reply delayed by slow_seconds
    slow_seconds: float = 5.0
    latency: float = 0.0  # seconds added before every command reply
    silent: bool = False  # accept TCP and never send a byte (no banner): a hung provider
    throttle_reply: str | None = None  # None: the profile's text
    block_reply: str | None = None
    too_many_connections_reply: str | None = None
    max_messages_reply: str | None = None
    unknown_user_reply: str | None = None
    full_mailbox_reply: str | None = None
    greylist_reply: str | None = None
    tempfail_reply: str | None = None
    reject_reply: str | None = None

    def __post_init__(self) -> None:
        profile_replies(self.profile)  # raises on an unknown profile
        if self.throttle_at not in ("rcpt", "data"):
            raise ConfigError(f"throttle_at must be 'rcpt' or 'data', not {self.throttle_at!r}")
        if self.block_at not in ("connect", "rcpt"):
            raise ConfigError(f"block_at must be 'connect' or 'rcpt', not {self.block_at!r}")
        if self.greylist_by not in ("subnet", "ip"):
            raise ConfigError(f"greylist_by must be 'subnet' or 'ip', not {self.greylist_by!r}")
        if self.capacity is not None and self.capacity <= 0:
            raise ConfigError("capacity must be positive")
        changes = tuple(sorted((float(a), float(c)) for a, c in self.capacity_changes))
        if any(c <= 0 for _, c in changes) or (changes and self.capacity is None):
            raise ConfigError("capacity_changes need a capacity and positive capacities")
        object.__setattr__(self, "capacity_changes", changes)
        per_ip = self.ip_capacity
        pairs = tuple(sorted((str(ip), float(c)) for ip, c in (
            per_ip.items() if isinstance(per_ip, dict) else per_ip)))
        if any(c <= 0 for _, c in pairs):
            raise ConfigError("ip_capacity needs positive capacities")
        object.__setattr__(self, "ip_capacity", pairs)
        for name in ("unknown_users", "full_mailboxes"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,))
            else:
                object.__setattr__(self, name, tuple(value))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProviderBehaviour:
        """Build from a TOML/dict table; unknown keys are refused."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown behaviour keys {unknown}; known: {sorted(known)}")
        return cls(**data)

    def replies(self) -> dict[str, str]:
        """Reply texts: this behaviour's overrides over the profile's defaults, CRLF-joined."""
        texts = profile_replies(self.profile)
        for kind in REPLY_KINDS:
            override = getattr(self, kind)
            if override is not None:
                texts[kind] = override
        return {
            k: "\r\n".join(line.rstrip("\r") for line in v.split("\n")) for k, v in texts.items()
        }


@dataclass(frozen=True)
class Verdict:
    """A refusal: the reply text and the event it is logged and counted as."""

    reply: str
    event: str  # refused | throttled | blocked | rejected | deferred
    block: bool = False  # this throttle made the provider block the source IP


@dataclass
class SourceCounters:
    connections: int = 0
    refused: int = 0
    accepted: int = 0
    throttled: int = 0
    blocked: int = 0
    rejected: int = 0
    deferred: int = 0
    blocks: int = 0  # blocks earned (block_after throttles within block_window)


@dataclass
class _Source:
    counters: SourceCounters = field(default_factory=SourceCounters)
    active: int = 0
    tokens: float = 0.0
    refilled_at: float | None = None
    throttle_times: deque[float] = field(default_factory=deque)
    blocked_until: float = -math.inf


class _SafeFormat(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class ProviderRules:
    """Per-provider decision state: token buckets, connection counts, greylist, blocks."""

    def __init__(self, behaviour: ProviderBehaviour, mx_host: str = "mx.sim.test") -> None:
        self.behaviour = behaviour
        self.mx_host = mx_host
        self._replies = behaviour.replies()
        self._sources: dict[str, _Source] = {}
        self._greylist: dict[tuple[str, str, str], float] = {}
        self._t0: float | None = None  # the first command seen (capacity_changes count from it)
        self._tempfailed: set[str] = set()

    # -- helpers ---------------------------------------------------------------------------
    def _source(self, ip: str) -> _Source:
        src = self._sources.get(ip)
        if src is None:
            src = self._sources[ip] = _Source()
        return src

    def reply(self, kind: str, ip: str = "", rcpt: str = "") -> str:
        domain = rcpt.rpartition("@")[2]
        return self._replies[kind].format_map(
            _SafeFormat(ip=ip, rcpt=rcpt, domain=domain, mx=self.mx_host)
        )

    def _verdict(self, src: _Source, kind: str, event: str, ip: str, rcpt: str = "") -> Verdict:
        setattr(src.counters, event, getattr(src.counters, event) + 1)
        return Verdict(self.reply(kind, ip, rcpt), event)

    def _is_blocked(self, src: _Source, now: float) -> bool:
        return now < src.blocked_until

    def capacity(self, now: float, ip: str | None = None) -> float | None:
        """Accepted messages per second per source IP at ``now`` (capacity_changes applied);
        of ``ip`` when it has a capacity of its own (``ip_capacity``, scaled by the changes)."""
        b = self.behaviour
        cap = b.capacity
        if self._t0 is None:
            self._t0 = now
        for after, new in b.capacity_changes:
            if now - self._t0 >= after:
                cap = new
        own = dict(b.ip_capacity).get(ip) if ip is not None and b.ip_capacity else None
        if own is None:
            return cap
        return own if cap is None or b.capacity is None else own * cap / b.capacity

    def _take_token(self, src: _Source, ip: str, n: int, now: float) -> bool:
        """Token bucket: refills at ``capacity``/s up to the burst depth."""
        cap = self.capacity(now, ip)
        if cap is None:
            return True
        b = self.behaviour
        burst = b.burst if b.burst is not None else max(1.0, cap / 4)
        if src.refilled_at is None:
            src.tokens = burst
        else:
            src.tokens = min(burst, src.tokens + (now - src.refilled_at) * cap)
        src.refilled_at = now
        if src.tokens >= n:
            src.tokens -= n
            return True
        return False

    def _throttle(self, src: _Source, ip: str, rcpt: str, now: float) -> Verdict:
        b = self.behaviour
        earned = False
        if b.block_after is not None:
            times = src.throttle_times
            times.append(now)
            while times and times[0] <= now - b.block_window:
                times.popleft()
            if len(times) >= b.block_after:
                # The sender kept pushing through throttle replies: punish it.
                src.blocked_until = now + b.block_duration
                src.counters.blocks += 1
                times.clear()
                earned = True
        verdict = self._verdict(src, "throttle_reply", "throttled", ip, rcpt)
        return dataclasses.replace(verdict, block=True) if earned else verdict

    @staticmethod
    def _local(rcpt: str) -> str:
        return rcpt.rpartition("@")[0].lower() if "@" in rcpt else rcpt.lower()

    # -- decisions -------------------------------------------------------------------------
    def on_connect(self, ip: str, now: float) -> Verdict | None:
        """A new connection from ``ip``; if accepted it stays open until :meth:`on_disconnect`."""
        b = self.behaviour
        src = self._source(ip)
        if b.block_at == "connect" and self._is_blocked(src, now):
            return self._verdict(src, "block_reply", "blocked", ip)
        if b.max_connections is not None and src.active >= b.max_connections:
            return self._verdict(src, "too_many_connections_reply", "refused", ip)
        src.active += 1
        src.counters.connections += 1
        return None

    def on_disconnect(self, ip: str) -> None:
        src = self._source(ip)
        src.active = max(0, src.active - 1)

    def on_mail(self, ip: str, messages_on_connection: int, now: float) -> Verdict | None:
        limit = self.behaviour.messages_per_connection
        if limit is not None and messages_on_connection >= limit:
            return self._verdict(self._source(ip), "max_messages_reply", "deferred", ip)
        return None

    def on_rcpt(self, ip: str, sender: str, rcpt: str, now: float) -> Verdict | None:
        b = self.behaviour
        src = self._source(ip)
        local = self._local(rcpt)
        if self._is_blocked(src, now):
            return self._verdict(src, "block_reply", "blocked", ip, rcpt)
        if any(local.startswith(p) for p in b.unknown_users):
            return self._verdict(src, "unknown_user_reply", "rejected", ip, rcpt)
        if any(local.startswith(p) for p in b.full_mailboxes):
            return self._verdict(src, "full_mailbox_reply", "deferred", ip, rcpt)
        if b.greylist_seconds is not None:
            client = ip if b.greylist_by == "ip" else ip.rsplit(".", 1)[0]
            key = (client, sender.lower(), rcpt.lower())
            first = self._greylist.setdefault(key, now)
            if now - first < b.greylist_seconds:
                return self._verdict(src, "greylist_reply", "deferred", ip, rcpt)
        if (b.tempfail_prefix and local.startswith(b.tempfail_prefix)
                and rcpt.lower() not in self._tempfailed):
            self._tempfailed.add(rcpt.lower())
            return self._verdict(src, "tempfail_reply", "deferred", ip, rcpt)
        if b.throttle_at == "rcpt" and not self._take_token(src, ip, 1, now):
            return self._throttle(src, ip, rcpt, now)
        return None

    def on_data(self, ip: str, rcpts: list[str], now: float) -> Verdict | None:
        b = self.behaviour
        src = self._source(ip)
        if b.reject_prefix and any(self._local(r).startswith(b.reject_prefix) for r in rcpts):
            return self._verdict(src, "reject_reply", "rejected", ip, rcpts[0])
        if self._is_blocked(src, now):
            return self._verdict(src, "block_reply", "blocked", ip, rcpts[0])
        if b.throttle_at == "data" and not self._take_token(src, ip, len(rcpts), now):
            return self._throttle(src, ip, rcpts[0], now)
        return None

    def data_delay(self, rcpts: list[str]) -> float:
        """Extra seconds before the DATA reply ("slow" recipients)."""
        b = self.behaviour
        if b.slow_prefix and any(self._local(r).startswith(b.slow_prefix) for r in rcpts):
            return b.slow_seconds
        return 0.0

    def on_accepted(self, ip: str, rcpts: int) -> None:
        self._source(ip).counters.accepted += rcpts

    def is_blocked(self, ip: str, now: float) -> bool:
        return self._is_blocked(self._source(ip), now)

    def stats(self) -> dict[str, dict[str, int]]:
        """Counters per source IP."""
        return {ip: dataclasses.asdict(s.counters) for ip, s in sorted(self._sources.items())}
