"""The message ids a worker accepted within the dedup window, in about 24 bytes each.

The worker keeps every id accepted in the last ``worker.dedup_window`` (24 h) to refuse a
second message with the same id (``kmta.policy.dedup``), and reads them all from the ids topic
at start. In a dict of ``str -> Seen`` that took about 215 bytes an id (the id string, a
``Seen`` with its float and int objects, the dict slot; tracemalloc): 215 MB more worker
memory for each million messages a day (``make bench-soak``).

Here an id is the 64-bit BLAKE2b hash of its text, in a sorted ``array('q')`` searched by
``bisect``, beside two more arrays for where (partition and offset, packed in one int64; -1
for an id removed) and when (a double). Only ids not in the arrays yet wait in a small dict
(an id already there is changed in place); at ``max(merge_at, ids / 256)`` of them a merge
moves them in, in place: the arrays grow by the new ids and, from the back, the runs between
them move up by slice copies (memmove), a Python step per new id, not per id.

A pending id costs ~200 bytes (the dict slot, the int hash, the ``Seen`` and its numbers), so
the pending dict is kept to a small share of the whole: before (up to 65,536 of them, and a
merge that built new arrays beside the old) the worker's memory grew ~100 bytes per id
routed, not 24 (docs/benchmark.md, "Memory while a queue builds"). ``prune`` (every 5
minutes) drops the ids older than the window and the removed ones, in place: one pass over
the times.

Two different ids with the same hash would make the second a duplicate: with a million ids
in the window the chance is about 3e-8.
"""
from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left

from kmta.policy.dedup import Seen

__all__ = ["SeenIds"]

_PARTITION_BITS = 16
_PARTITION_MASK = (1 << _PARTITION_BITS) - 1
_GONE = -1  # ``where`` of an id removed (every packed place is >= 0)
_PENDING_SHARE = 8  # the pending dict merges at 1/2**8 of the ids (and merge_at at least)


def _hash(msg_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(msg_id.encode(), digest_size=8).digest(), "big",
                          signed=True)


def _pack(seen: Seen) -> int:
    return seen.offset << _PARTITION_BITS | seen.partition


class SeenIds:
    """``get``, ``[id] = Seen``, ``pop``: the part of a mapping the router and the ids topic's
    view use (ids cannot be listed: only their hashes are kept)."""

    def __init__(self, merge_at: int = 4096) -> None:
        self._h = array("q")  # sorted hashes
        self._where = array("q")  # offset << 16 | partition, or _GONE
        self._at = array("d")
        self._gone = 0  # entries of the arrays that are _GONE
        self._new: dict[int, Seen] = {}  # ids not in the arrays yet
        self._merge_at = max(1, merge_at)

    def _index(self, h: int) -> int:
        i = bisect_left(self._h, h)
        return i if i < len(self._h) and self._h[i] == h else -1

    def _get(self, h: int) -> Seen | None:
        seen = self._new.get(h)
        if seen is not None:
            return seen
        i = self._index(h)
        if i < 0:
            return None
        where = self._where[i]
        if where == _GONE:
            return None
        return Seen(self._at[i], where & _PARTITION_MASK, where >> _PARTITION_BITS)

    def get(self, msg_id: str, default: Seen | None = None) -> Seen | None:
        seen = self._get(_hash(msg_id))
        return default if seen is None else seen

    def __contains__(self, msg_id: object) -> bool:
        return isinstance(msg_id, str) and self._get(_hash(msg_id)) is not None

    def __setitem__(self, msg_id: str, seen: Seen) -> None:
        if not 0 <= seen.partition <= _PARTITION_MASK or seen.offset < 0:
            raise ValueError(f"cannot keep {seen}")
        h = _hash(msg_id)
        i = self._index(h)
        if i >= 0:  # in the arrays (the ids view reading back what the router set): in place
            if self._where[i] == _GONE:
                self._gone -= 1
            self._where[i] = _pack(seen)
            self._at[i] = seen.at
            return
        self._new[h] = seen
        if len(self._new) >= max(self._merge_at, len(self._h) >> _PENDING_SHARE):
            self.merge()

    def pop(self, msg_id: str, default: Seen | None = None) -> Seen | None:
        h = _hash(msg_id)
        seen = self._new.pop(h, None)
        if seen is not None:
            return seen
        seen = self._get(h)
        if seen is None:
            return default
        self._where[self._index(h)] = _GONE
        self._gone += 1
        if self._gone >= max(self._merge_at, len(self._h) >> 2):
            self._compact(None)
        return seen

    def __len__(self) -> int:
        return len(self._h) - self._gone + len(self._new)

    def merge(self) -> None:
        """Move the pending ids into the arrays, in place (no second copy of the arrays)."""
        if not self._new:
            return
        new = sorted(self._new.items(), key=lambda kv: kv[0])
        h, where, at = self._h, self._where, self._at
        end = len(h)  # the arrays' entries below ``end`` are not moved yet
        h.frombytes(bytes(8 * len(new)))
        where.frombytes(bytes(8 * len(new)))
        at.frombytes(bytes(8 * len(new)))
        dst = len(h)
        for key, seen in reversed(new):
            i = bisect_left(h, key, 0, end)
            if i < end:  # the run above the new id moves up (memmove of a slice copy)
                n = end - i
                h[dst - n:dst] = h[i:end]
                where[dst - n:dst] = where[i:end]
                at[dst - n:dst] = at[i:end]
                dst -= n
            dst -= 1
            h[dst] = key
            where[dst] = _pack(seen)
            at[dst] = seen.at
            end = i
        self._new = {}

    def prune(self, older_than: float) -> int:
        """Forget the ids accepted at or before ``older_than``; returns how many."""
        self.merge()
        return self._compact(older_than)

    def _compact(self, older_than: float | None) -> int:
        """Drop, in place, the removed entries and (unless None) those at or before
        ``older_than``; returns how many of the latter were live ids."""
        h, where, at = self._h, self._where, self._at
        cut = float("-inf") if older_than is None else older_than
        gone = [i for i, (w, t) in enumerate(zip(where, at, strict=True))
                if w == _GONE or t <= cut]
        if not gone:
            return 0
        live = len(gone) - self._gone
        dst = gone[0]
        for j, i in enumerate(gone):
            stop = gone[j + 1] if j + 1 < len(gone) else len(h)
            n = stop - i - 1  # the run kept after entry i moves down
            if n:
                h[dst:dst + n] = h[i + 1:stop]
                where[dst:dst + n] = where[i + 1:stop]
                at[dst:dst + n] = at[i + 1:stop]
                dst += n
        del h[dst:], where[dst:], at[dst:]
        self._gone = 0
        return live
