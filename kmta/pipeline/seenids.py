"""The message ids a worker accepted within the dedup window, in 24 bytes each.

The worker keeps every id accepted in the last ``worker.dedup_window`` (24 h) to refuse a
second message with the same id (``kmta.policy.dedup``), and reads them all from the ids topic
at start. In a dict of ``str -> Seen`` that took about 215 bytes an id (the id string, a
``Seen`` with its float and int objects, the dict slot; tracemalloc): 215 MB more worker
memory for each million messages a day (``make bench-soak``).

Here an id is the 64-bit BLAKE2b hash of its text, in a sorted ``array('q')`` searched by
``bisect``, beside two more arrays for where (partition and offset, packed in one int64) and
when (a double). New and removed ids wait in a small dict until there are ``merge_at`` of
them; a merge copies the runs between them with slice copies (memcpy), so it costs a Python
step per change, not per id. ``prune`` (every 5 minutes) drops the ids older than the window:
one pass over the times.

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


def _hash(msg_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(msg_id.encode(), digest_size=8).digest(), "big",
                          signed=True)


class SeenIds:
    """``get``, ``[id] = Seen``, ``pop``: the part of a mapping the router and the ids topic's
    view use (ids cannot be listed: only their hashes are kept)."""

    def __init__(self, merge_at: int = 65536) -> None:
        self._h = array("q")  # sorted hashes
        self._where = array("q")  # offset << 16 | partition
        self._at = array("d")
        self._changes: dict[int, Seen | None] = {}  # None: removed
        self._merge_at = merge_at

    def _index(self, h: int) -> int:
        i = bisect_left(self._h, h)
        return i if i < len(self._h) and self._h[i] == h else -1

    def _get(self, h: int) -> Seen | None:
        if h in self._changes:
            return self._changes[h]
        i = self._index(h)
        if i < 0:
            return None
        where = self._where[i]
        return Seen(self._at[i], where & ((1 << _PARTITION_BITS) - 1), where >> _PARTITION_BITS)

    def get(self, msg_id: str, default: Seen | None = None) -> Seen | None:
        seen = self._get(_hash(msg_id))
        return default if seen is None else seen

    def __contains__(self, msg_id: object) -> bool:
        return isinstance(msg_id, str) and self._get(_hash(msg_id)) is not None

    def __setitem__(self, msg_id: str, seen: Seen) -> None:
        if not 0 <= seen.partition < 1 << _PARTITION_BITS or seen.offset < 0:
            raise ValueError(f"cannot keep {seen}")
        self._changes[_hash(msg_id)] = seen
        self._maybe_merge()

    def pop(self, msg_id: str, default: Seen | None = None) -> Seen | None:
        h = _hash(msg_id)
        seen = self._get(h)
        if seen is None:
            return default
        if self._index(h) < 0:
            del self._changes[h]
        else:
            self._changes[h] = None
            self._maybe_merge()
        return seen

    def __len__(self) -> int:
        self.merge()
        return len(self._h)

    def _maybe_merge(self) -> None:
        if len(self._changes) >= max(self._merge_at, len(self._h) >> 6):
            self.merge()

    def merge(self) -> None:
        """Fold the changes into the arrays."""
        if not self._changes:
            return
        h, where, at = array("q"), array("q"), array("d")
        pos = 0
        for key, seen in sorted(self._changes.items(), key=lambda kv: kv[0]):
            i = bisect_left(self._h, key, pos)
            h.extend(self._h[pos:i])
            where.extend(self._where[pos:i])
            at.extend(self._at[pos:i])
            pos = i + 1 if i < len(self._h) and self._h[i] == key else i
            if seen is not None:
                h.append(key)
                where.append(seen.offset << _PARTITION_BITS | seen.partition)
                at.append(seen.at)
        h.extend(self._h[pos:])
        where.extend(self._where[pos:])
        at.extend(self._at[pos:])
        self._h, self._where, self._at = h, where, at
        self._changes = {}

    def prune(self, older_than: float) -> int:
        """Forget the ids accepted at or before ``older_than``; returns how many."""
        self.merge()
        gone = [i for i, t in enumerate(self._at) if t <= older_than]
        if not gone:
            return 0
        h, where, at = array("q"), array("q"), array("d")
        pos = 0
        for i in [*gone, len(self._h)]:
            h.extend(self._h[pos:i])
            where.extend(self._where[pos:i])
            at.extend(self._at[pos:i])
            pos = i + 1
        self._h, self._where, self._at = h, where, at
        return len(gone)
