"""When the transaction coordinator fences this node's producer: start a new one, or stop.

A broker failure longer than the transaction timeout makes the coordinator abort the open
transaction and bump the producer epoch; the producer is then fenced although nobody else took
its transactional id (measured: one of three brokers killed under load, the coordinator moved
after ~14 s, the sender got ProducerFenced and exited). The aborted transaction's outcomes are
still in the node's batch, so a new producer (same transactional id, a new epoch) writes them
again. A real takeover (a second node started with the same name) fences again at once: after
``LIMIT`` renewals within ``WINDOW`` seconds the node stops, as before.
"""
from __future__ import annotations

from collections import deque

__all__ = ["Renewals"]


class Renewals:
    LIMIT = 3
    WINDOW = 300.0

    def __init__(self) -> None:
        self._at: deque[float] = deque()

    def allow(self, now: float) -> bool:
        """True (and counted) when one more producer renewal is allowed at ``now``."""
        while self._at and self._at[0] <= now - self.WINDOW:
            self._at.popleft()
        if len(self._at) >= self.LIMIT:
            return False
        self._at.append(now)
        return True
