"""Pacing: messages spread evenly at the allowed rate, connection attempts counted per tact."""
from __future__ import annotations

import asyncio
import math
import time

__all__ = ["Pacer", "TactCounter"]


class Pacer:
    """Hands out send slots ``1/rate`` seconds apart (rate in messages per second), so bulk
    sending looks like steady, careful sending instead of bursts.

    The next slot is computed from the last one with the *current* rate, so a rate change takes
    effect at the next slot (a long interval chosen at a low rate does not hold back a raised
    rate). A slot taken late is counted from up to a quarter interval earlier: that absorbs the
    waiting worker's wake-up lateness (else the rate would sag below the allowed one), and is
    never a burst: even after idling, two slots are at least 3/4 of an interval apart.
    """

    LATENESS = 0.25  # share of an interval a late slot may be backdated

    def __init__(self, rate: float, clock=time.monotonic) -> None:  # noqa: ANN001
        self.rate = rate
        self._slot = -math.inf  # time of the last slot handed out
        self._clock = clock

    def _interval(self) -> float:
        return 1.0 / self.rate if self.rate > 0 else math.inf

    def delay(self) -> float:
        """Seconds until the next slot (0 when one is free now); does not take it."""
        if self.rate <= 0:
            return 1.0
        return max(0.0, self._slot + self._interval() - self._clock())

    def take(self) -> None:
        now = self._clock()
        interval = self._interval()
        if interval == math.inf:
            self._slot = now
            return
        self._slot = max(self._slot + interval, now - interval * self.LATENESS)

    async def acquire(self) -> None:
        while True:
            d = self.delay()
            if d <= 0:
                self.take()
                return
            await asyncio.sleep(min(d, 0.5))


class TactCounter:
    """At most ``limit`` events per tact (fixed windows), e.g. connection attempts."""

    def __init__(self, tact: float, clock=time.monotonic) -> None:  # noqa: ANN001
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
