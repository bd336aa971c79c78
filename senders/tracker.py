"""Which queue offsets may be committed: the first offset whose outcome is not yet written,
and which offsets past it are finished already (committed with it as the offset's metadata)."""
from __future__ import annotations

from collections import deque

__all__ = ["METADATA_MAX", "OffsetTracker", "decode_done", "encode_done"]

# the broker refuses offset metadata over offset.metadata.max.bytes (4096 by default)
METADATA_MAX = 3900
_TAG = "kmta-done:"


class OffsetTracker:
    """Messages of one partition finish out of order; the commit point only moves past an
    offset once every earlier offset is done, so a crash never loses an unfinished message.

    The offsets finished past the commit point travel with it (``metadata``): a node that
    takes the partition over skips them (``known_done``), so an outcome already committed is
    never repeated by the next owner."""

    def __init__(self, known_done: set[int] | None = None) -> None:
        self._order: deque[int] = deque()
        self._done: set[int] = set()
        self._open: set[int] = set()  # read here, no outcome yet (``claim``)
        self._known = set(known_done or ())  # finished by a previous owner, not read yet
        self.committable: int | None = None
        self.committed: int | None = None
        self.committed_metadata = ""

    def add(self, offset: int) -> bool:
        """Track an offset read; True when a previous owner finished it (skip it)."""
        self._order.append(offset)
        if offset in self._known:
            self._known.discard(offset)
            self.done(offset)
            return True
        self._open.add(offset)
        return False

    def claim(self, offset: int) -> bool:
        """An outcome for ``offset``: True for the first one of an offset read by this tracker;
        False for any other (a second one, or one of an offset it never read: a delivery that
        began before the partition was given up, which the next owner makes again)."""
        if offset not in self._open:
            return False
        self._open.discard(offset)
        return True

    def done(self, offset: int) -> None:
        self._done.add(offset)
        while self._order and self._order[0] in self._done:
            off = self._order.popleft()
            self._done.discard(off)
            self.committable = off + 1

    @property
    def idle(self) -> bool:
        return not self._order

    def skip_to(self, position: int) -> bool:
        """Nothing read is unfinished: the commit point may move on to the consumer's
        ``position``, past offsets no record has (the commit markers of the workers' routing
        transactions: else a drained partition's committed offset stays one short of its end
        and its lag never reaches 0). True when it moved."""
        if self._order or position <= (self.committable if self.committable is not None
                                        else -1):
            return False
        self.committable = position
        return True

    @property
    def point(self) -> int | None:
        """The offset to commit: past the last offset finished in order, else (nothing in order
        finished yet) the first offset read, so that the offsets finished past it still go
        with a commit (a partition never committed whose first message is slow to answer)."""
        if self.committable is not None:
            return self.committable
        return self._order[0] if self._order else None

    def metadata(self) -> str:
        """The finished offsets past the commit point, for the commit's metadata."""
        point = self.point
        return encode_done(0 if point is None else point, self._done | self._known)


def encode_done(point: int, done: set[int]) -> str:
    """``kmta-done:`` and ranges relative to the commit point (``3-9,12``); cut to fit."""
    out = _TAG
    run_start = prev = None
    for off in sorted(o for o in done if o >= point):
        if prev is not None and off == prev + 1:
            prev = off
            continue
        if run_start is not None:
            piece = _range(run_start - point, prev - point)
            if len(out) + len(piece) + 1 > METADATA_MAX:
                return out.rstrip(",")
            out += piece + ","
        run_start = prev = off
    if run_start is not None:
        piece = _range(run_start - point, prev - point)  # type: ignore[operator]
        if len(out) + len(piece) <= METADATA_MAX:
            out += piece
    return out.rstrip(",") if out != _TAG else ""


def _range(a: int, b: int) -> str:
    return str(a) if a == b else f"{a}-{b}"


def decode_done(point: int, metadata: str | None) -> set[int]:
    """The offsets ``encode_done`` wrote (nothing for metadata it did not write)."""
    if not metadata or not metadata.startswith(_TAG):
        return set()
    out: set[int] = set()
    try:
        for piece in metadata[len(_TAG):].split(","):
            if not piece:
                continue
            a, _, b = piece.partition("-")
            lo, hi = int(a), int(b or a)
            if lo < 0 or hi < lo or hi - lo > 10_000_000:
                return set()
            out.update(range(point + lo, point + hi + 1))
    except ValueError:
        return set()
    return out
