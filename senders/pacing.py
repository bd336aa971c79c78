"""Pacing: messages spread evenly at the allowed rate, connection attempts counted per tact."""
from __future__ import annotations

import math
import time

__all__ = ["Pacer", "TactCounter", "grid_slot"]


def grid_slot(earliest: float, rate: float, owned: frozenset[int], k: int,
              first: int = 0) -> float:
    """The first grid point at or after ``earliest`` that belongs to ``owned``: the grid has
    points ``j / (rate * k / len(owned))`` and point ``j`` belongs to ``(j + first) % k``."""
    shared = rate * k / len(owned)
    j = math.ceil(earliest * shared - 1e-9)
    for extra in range(k):
        if (j + extra + first) % k in owned:
            return (j + extra) / shared
    return j / shared  # unreachable: owned is a non-empty subset of range(k)


class Pacer:
    """Hands out send slots ``1/rate`` seconds apart (rate in messages per second), so bulk
    sending looks like steady, careful sending instead of bursts.

    The next slot is computed from the last one with the *current* rate, so a rate change takes
    effect at the next slot (a long interval chosen at a low rate does not hold back a raised
    rate). A slot taken late is counted from up to ``LATE_MAX`` (and at most a quarter
    interval) earlier: that absorbs the waiting worker's wake-up lateness (else the rate would
    sag below the allowed one). The bound is absolute: a provider whose limit is a token bucket
    one message deep (the simulator's below 4 msg/s) refuses a message sent less than one of
    its intervals after the last, and a quarter interval of backdating put the second slot after
    an idle spell (the start, a restart, the end of a local slow-down) 3/4 of an interval after
    the first: at a learned 94 % of 3 msg/s each of them drew a throttle (bench-adaptive-live,
    capacity 3: after the restart the rate never regained 80 %).

    With a ``grid`` ``(owned, k)`` the pacer is one of ``k`` that share a source IP (sender nodes
    owning slots of the ISP's ``k`` partitions): slots then sit on a grid of the *shared* rate
    (``rate * k / len(owned)``) anchored at the clock's zero, and this pacer takes only grid
    points ``j`` with ``j % k`` in ``owned``. The nodes' messages interleave instead of meeting
    by chance (at 1 msg/s a provider allowing a burst of one message throttles two that
    arrive together); the clock must then be the wall clock, which the nodes share. A raised
    rate should then take effect at one instant on every node (``raise_at``): a node on the
    new grid and one still on the old would meet by chance.

    A raise of the grid's rate at instant ``A`` continues the grid: the new grid starts at
    the old grid's last point at or before ``A`` (its ``anchor``), its points are the new
    interval apart from there, and the ownership of points goes on from that point's
    (``first``), so every node computes the same grid from the same change. Before, the new
    grid started at ``A`` itself, with point 1 owned by slot 1 whatever slot the old grid was
    at: each change left a gap of up to a whole round of the nodes (~1 message per change at
    2 msg/s x 4 nodes). A cut still starts the grid at ``A`` from slot 0 (a grid without
    history), so a node whose grid began elsewhere (a restart, a new node) falls in line.
    """

    LATENESS = 0.25  # share of an interval a late slot may be backdated ...
    LATE_MAX = 0.01  # ... and seconds (10 ms: the whole quarter from 25 msg/s up)

    def __init__(self, rate: float, clock=time.monotonic,
                 grid: tuple[frozenset[int], int] | None = None) -> None:
        self.rate = rate
        self.grid = grid
        self._slot = -math.inf  # time of the last slot handed out
        self._clock = clock
        self.anchor = 0.0  # the shared grid's origin (its last point before its last change)
        self.first = 0  # the slot that owns the grid's point 0 (see ``grid_slot``)
        # (at, rate, grid rate): a grid change to apply at a given time
        self.pending: tuple[float, float, float | None] | None = None
        self.grid_rate: float | None = None  # the grid's rate when ``rate`` is slowed locally

    def set_rate(self, rate: float, raise_at: float | None = None,
                 grid_rate: float | None = None) -> None:
        """Set the rate (and the shared grid's rate, when this pacer is slowed locally below
        it); a raise waits until the clock reaches ``raise_at`` (if given), so that every node
        moves to the new grid at once; a cut applies at once."""
        now = self._clock()
        if raise_at is not None and now < raise_at and grid_rate != self.grid_rate:
            self.pending = (raise_at, rate, grid_rate)
            self.rate = min(self.rate, rate)  # a local slow-down still applies at once
        elif raise_at is not None and now < raise_at and self.pending is not None:
            self.pending = (self.pending[0], rate, self.pending[2])  # local slow-down only
            self.rate = min(self.rate, rate)
        else:
            if grid_rate != self.grid_rate:
                # a change heard after its instant (or without one): the grid still goes on
                # from that instant, as on the nodes that applied it in time
                self._regrid(now if raise_at is None else min(now, raise_at), rate, grid_rate)
            self.rate, self.grid_rate = rate, grid_rate
            self.pending = None

    def _regrid(self, at: float, rate: float, grid_rate: float | None) -> None:
        """Move the shared grid to a new rate at instant ``at``. A raise goes on from the old
        grid's last point at or before ``at``, its next point one new interval after that point
        (or at ``at``, if that is sooner: no point falls before the change) and owned by the
        next slot: no gap, and no point next to an old one."""
        old = max(self.grid_rate or 0.0, self.rate)
        new = max(grid_rate or 0.0, rate)
        if self.grid is None or self.grid[1] <= 1 or not self.grid[0] or new <= 0:
            self.anchor, self.first = at, 0
            return
        owned, k = self.grid
        if old <= 0 or new < old or at < self.anchor:
            # a cut (or no grid before) starts the grid one new interval after the change, at
            # slot 1: a grid every node computes without its history, so a node that started
            # later (its grid from its own start) falls in line with the others at the next
            # cut; the new interval is longer than the old, so no point falls next to one
            self.anchor, self.first = at + len(owned) / (new * k), 1 % k
            return
        shared = old * k / len(owned)
        m = math.floor((at - self.anchor) * shared + 1e-9)
        self.anchor = max(self.anchor + m / shared, at - len(owned) / (new * k))
        self.first = (self.first + m) % k

    def _apply_pending(self, now: float) -> None:
        if self.pending is not None and now >= self.pending[0]:
            # every node moves to the new grid at this instant (see ``_regrid``)
            at, rate, grid_rate = self.pending
            self._regrid(at, rate, grid_rate)
            self.rate, self.grid_rate = rate, grid_rate
            self.pending = None

    def _interval(self) -> float:
        return 1.0 / self.rate if self.rate > 0 else math.inf

    def _late(self, interval: float) -> float:
        """How far a late slot may be counted back."""
        return min(interval * self.LATENESS, self.LATE_MAX)

    def _next(self, now: float) -> float:
        interval = self._interval()
        late = self._late(interval)
        if self.grid is None or not self.grid[0] or self.grid[1] <= 1:
            return max(self._slot + interval, now - late)
        owned, k = self.grid
        grid_rate = max(self.grid_rate or 0.0, self.rate)
        if self.rate >= grid_rate:
            # the grid alone spaces this node's slots (a node owning two of four slots has two
            # adjacent points, then a gap: spacing them by its own interval halved its rate)
            interval = len(owned) / (grid_rate * k)
        # else: a locally slowed pacer keeps the shared grid and skips points of it by its
        # own, slower interval
        earliest = max(self._slot + interval * (1 - self.LATENESS), now - late)
        earliest = max(earliest, self.anchor) - self.anchor  # point 0: the old grid's last
        return self.anchor + grid_slot(earliest, grid_rate, owned, k, self.first)

    def delay(self) -> float:
        """Seconds until the next slot (0 when one is free now); does not take it."""
        now = self._clock()
        self._apply_pending(now)
        if self.rate <= 0:
            return 1.0 if self.pending is None else max(0.0, self.pending[0] - now)
        nxt = self._next(now)
        if self.pending is not None:
            nxt = min(nxt, self.pending[0])  # look again when the raise applies
        return max(0.0, nxt - now)

    def take(self) -> None:
        now = self._clock()
        self._apply_pending(now)
        if self._interval() == math.inf:
            self._slot = now
            return
        self._slot = max(self._next(now), now - self._late(self._interval()))


class TactCounter:
    """At most ``limit`` events per tact (fixed windows), e.g. connection attempts."""

    def __init__(self, tact: float, clock=time.monotonic) -> None:
        self.tact = tact
        self._clock = clock
        self._start = clock()
        self.count = 0

    def wait(self, limit: float | None) -> float:
        """Seconds to wait before the next event is allowed (0 = now)."""
        now = self._clock()
        if now - self._start >= self.tact:
            self._start = now - (now - self._start) % self.tact
            self.count = 0
        if limit is None or self.count < limit:
            return 0.0
        return self._start + self.tact - now

    def take(self) -> None:
        self.count += 1
