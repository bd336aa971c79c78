"""Which queue offsets may be committed: the first offset whose outcome is not yet written."""
from __future__ import annotations

from collections import deque

__all__ = ["OffsetTracker"]


class OffsetTracker:
    """Messages of one partition finish out of order; the commit point only moves past an
    offset once every earlier offset is done, so a crash never loses an unfinished message."""

    def __init__(self) -> None:
        self._order: deque[int] = deque()
        self._done: set[int] = set()
        self.committable: int | None = None
        self.committed: int | None = None

    def add(self, offset: int) -> None:
        self._order.append(offset)

    def done(self, offset: int) -> None:
        self._done.add(offset)
        while self._order and self._order[0] in self._done:
            off = self._order.popleft()
            self._done.discard(off)
            self.committable = off + 1

    @property
    def pending(self) -> int:
        return len(self._order)
