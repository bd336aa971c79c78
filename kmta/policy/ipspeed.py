"""Per-source-IP speed levels: each source IP of an ISP has a ``SpeedState`` of its own.

Providers rate each source IP on its own (its reputation, its own limit), so one level shared
by a pool's IPs lets a slow IP's throttles pull every IP down. With a level per IP a throttle
lowers only the IP that got it; each IP's level is found, held and probed by the controller in
``kmta.policy.speed`` exactly as a shared one is (it already counts busy periods and the
throttle budget per source IP). The brain keeps the levels in the ISP's row and publishes each
on the IP's ``<isp>|<ip>`` state record; the ISP's record carries the lowest (``lowest``), the
speed for an IP that has no level yet.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from kmta.policy.speed import HOLD, PROBE, SpeedState, initial
from schemas.rules import SpeedRule

__all__ = ["IDLE", "for_new_ip", "idle", "lowest"]

# seconds without an event after which a source IP's level is dropped (an IP taken out of the
# pool, or idle for a day): else its level stays in the row and, the lowest, holds down the
# ISP's record and the level new IPs start from
IDLE = 24 * 3600.0


def lowest(levels: Iterable[float]) -> float | None:
    """The lowest of the IPs' speeds (None: no IP has a level)."""
    return min(levels, default=None)


def for_new_ip(levels: Mapping[str, SpeedState], rule: SpeedRule, now: float,
               shared: SpeedState | None = None) -> SpeedState:
    """The first state of a source IP that has no level yet.

    ``rule.ip_initial`` (set): that speed, learned (held and probed from). Else what the ISP
    knows: the state of its lowest IP level, or ``shared`` (the level all IPs shared, e.g. a
    row from before per-IP levels), without its counts and throttle history: IPs first seen
    during a cold start grow on together from the same speed, and an IP added later starts at a
    level the pool holds clean (a probe in progress starts from its floor). Else
    ``initial(rule, now)``: a cold start."""
    if rule.ip_initial is not None:
        return initial(rule, now, learned=rule.ip_initial)
    base = min(levels.values(), key=lambda s: s.speed, default=shared)
    if base is None:
        return initial(rule, now)
    if base.mode == PROBE and base.floor is not None:
        base = replace(base, mode=HOLD, speed=base.floor)
    return replace(base, period_start=now, clean=0, throttled=0, decreased_at=None, since=now,
                   next_probe_at=max(base.next_probe_at, now), recent=(), prev_floor=None,
                   floor_at=None, cut_throttles=0, cut_ips=(), last_cut="", sources=(),
                   prior=None, raised_at=None, cut_last=(), refused_at=None, refused_clean=0,
                   attempts=0, deferred=0)


def idle(seen: Mapping[str, float], levels: Iterable[str], now: float,
         after: float = IDLE) -> list[str]:
    """The IPs of ``levels`` not seen (``seen``: the time of each IP's last event) for
    ``after`` seconds; an IP never seen is not idle (a row from before ``seen`` was kept)."""
    return sorted(ip for ip in levels if seen.get(ip, now) <= now - after)
