"""Parking: when a message that cannot be sent now goes to the delay topics, and until when.

A sender holds a blocked lane's messages while the partition they came from may wait (the
ISP's own partition); a partition that must keep moving (shared with other ISPs, or the ISP's
own while only one of its pools is blocked) has its blocked messages parked instead.
"""

from __future__ import annotations

import math

__all__ = ["PARK_HELD_AFTER", "PAUSED_PARK", "held_until", "must_flow", "park_until"]

PARK_HELD_AFTER = 30.0  # a lane blocked at least this long parks what it holds
PAUSED_PARK = 30.0  # seconds a message of a paused lane (no end time) stays parked
FULL_PARK_MIN = 5.0  # a message of a full lane is parked at least this long


def park_until(blocked: float | None, backlog: int, rate: float, now: float) -> float:
    """When a message parked on arrival comes back: when its lane's block ends (``blocked``;
    ``inf`` = paused, retried in ``PAUSED_PARK``); for a full lane (``blocked`` None) once
    half its ``backlog`` has gone out at ``rate`` messages per second, at least 5 s."""
    if blocked is not None:
        return blocked if blocked != math.inf else now + PAUSED_PARK
    return now + max(FULL_PARK_MIN, backlog / max(rate, 0.01) / 2)


def held_until(blocked: float | None, now: float) -> float | None:
    """Until when the messages a lane holds are parked, None to keep holding them: a block
    shorter than ``PARK_HELD_AFTER`` is waited out."""
    if blocked is None or blocked - now < PARK_HELD_AFTER:
        return None
    return blocked if blocked != math.inf else now + PAUSED_PARK


def must_flow(dedicated: bool, blocked: bool, pools: int, isp_blocked: bool) -> bool:
    """Whether a partition must keep moving past a lane's messages: it is shared with other
    ISPs (not ``dedicated`` to the lane's), or it is the ISP's own but only a pool or source
    IPs of the ISP are blocked (``blocked`` and not ``isp_blocked``) while other pools'
    messages sit on it too (``pools`` > 1)."""
    if not dedicated:
        return True
    return blocked and pools > 1 and not isp_blocked
