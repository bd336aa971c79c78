"""Consumer lag of the partitions a process owns (``kmta_consumer_lag_messages``): the log end
offset (asked of the broker, so a paused partition's lag grows too) minus what the group
finished (its committed offset when the process knows it, else the consumer's position)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kmta.pipeline.metrics import CONSUMER_LAG

__all__ = ["LAG_EVERY", "Lag"]

LAG_EVERY = 5.0  # seconds between end-offset requests
TIMEOUT = 5.0


class Lag:
    """``consumer()`` is an aiokafka consumer (or faust's, with ``ends`` its
    ``highwaters``), None while it is not started; ``done(tp)`` the offset finished up to, if
    the process knows it better than the position (the sender's commit point)."""

    def __init__(self, group: str, consumer: Callable[[], Any],
                 done: Callable[[Any], int | None] | None = None,
                 ends: Callable[[Any, list[Any]], Awaitable[Mapping[Any, int]]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.group = group
        self._consumer = consumer
        self._done = done
        self._ends = ends or (lambda c, tps: c.end_offsets(tps))
        self._clock = clock
        self._at = -LAG_EVERY

    async def refresh(self) -> None:
        now = self._clock()
        if now - self._at < LAG_EVERY:
            return
        self._at = now
        c = self._consumer()
        tps = sorted(c.assignment()) if c is not None else []
        samples: dict[tuple[str, ...], float] = {}
        if tps:
            ends = await asyncio.wait_for(self._ends(c, tps), TIMEOUT)
            for tp in tps:
                end = ends.get(tp)
                done = self._done(tp) if self._done else None
                if done is None:
                    try:
                        done = await asyncio.wait_for(c.position(tp), 1.0)
                    except Exception:  # noqa: BLE001 - no position yet: no sample
                        continue
                if end is not None and done is not None:
                    samples[(self.group, tp.topic, str(tp.partition))] = float(max(0, end - done))
        CONSUMER_LAG.set_all(samples, part=self.group)

    def clear(self) -> None:
        CONSUMER_LAG.set_all({}, part=self.group)
