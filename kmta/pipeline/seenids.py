"""The message ids a worker accepted within the dedup window: the last ``hot`` in memory
(about 24 bytes each), the older ones in a file.

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

**The file (``path``).** 24 B an id is still memory that grows with the day's volume (24 MB
per million ids in the window; the soak's worker grew 23 MB from 100 k to 1 M queued). With
a path (the worker's: ``DATA_DIR/faust/NODE/seen-ids.sqlite``) the arrays hold at most ``hot``
ids (``worker.dedup_memory_ids``, 2^17: ~3 MB); when a merge fills them every id in memory
moves to a SQLite table keyed by the hash (``spill``: one transaction, in hash order, removed
ids deleted) and the arrays start empty. A lookup that memory misses (every new id: the hot
path) reads the table, one B-tree descent; what memory holds (a newer value, or ``None`` for
an id removed) hides the table's row. SQLite keeps a page cache of 2 MiB and no memory map:
the file's other pages are the kernel's page cache, not the worker's RSS. Why SQLite and not
sorted run files: one index to search on a miss (runs would each need a search, or a
prefilter that grows with the ids), prune by an index on the time, and it is in the standard
library. Its costs (``scripts/bench_seenids.py``, docs/benchmark.md): a miss reads the file
(µs, in C), and the writes: ``hot`` rows a spill into a table of any size (a B-tree keyed by
random hashes: each spill touches most leaves while the table is small and ~one leaf a row
once it is large), and a prune's deletes.

**The file's work in chunks.** Written in one call, a spill blocked the event loop 0.4 s and
a prune 0.6 s at a million ids (the router's loop: routing and the brain stalled). So a
spill freezes the arrays as a segment (no copy) that lookups read, newest first, between
memory and the file until its rows are written; ``prune`` freezes memory too (one place for
every id: a value pruned from memory never uncovers an older row) and queues a delete of the
rows at or before the cut behind it, which lookups apply at once (a segment's entry or a
row at or before a pending prune's cut is gone). The work runs in order, ``chunk`` rows
(2,048: a few ms) in one call, one call in ``chunk // 4`` sets or pops (four rows a call,
against two an id: written once, deleted once), each call when more than ``hot`` rows wait
(a prune longer than the spills behind it); a job is one transaction across its chunks, so
the B-tree's pages are still visited once a spill. Not a writer thread: sqlite3 would need a
second connection and WAL for lookups to read beside it, and the GIL still takes the loop
from it (bench: a busy loop's longest gap 9 ms beside a spill in a thread, the spill 2.4x
slower) while the same CPU is spent; the chunks' stall is the chunk, set by ``chunk``.

The file is a
cache of the ids topic: made afresh when opened (no journal, no syncs: what a crash leaves is
deleted at the next start), since the view reads the whole topic at start anyway. Resuming
from it would need the view's offsets stored with each spill and the worker's own ids (which
its view skips) spilled before the crash: not done. Rebalances change nothing here: every
worker's view reads every partition of the ids topic.
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
from array import array
from bisect import bisect_left
from collections import deque

from kmta.policy.dedup import Seen

__all__ = ["SeenIds"]

_PARTITION_BITS = 16
_PARTITION_MASK = (1 << _PARTITION_BITS) - 1
_GONE = -1  # ``where`` of an id removed (every packed place is >= 0)
_PENDING_SHARE = 8  # the pending dict merges at 1/2**8 of the ids (and merge_at at least)
HOT = 1 << 17  # ids kept in the arrays before they move to the file (~3 MB)
CHUNK = 2048  # rows of the file's work in one call (a few ms)
_PACE = 4  # rows of the file's work a set or pop pays for
# with a file, the merge's Python step per pending id is most of a merge's cost, and the arrays
# are small: 1,024 a merge is 2-4 ms against 7-19 ms for 4,096, for the same CPU in all
_FILE_MERGE_AT = 1024
_CACHE_KIB = 2048  # SQLite's page cache: the file's other pages are the kernel's page cache


def _hash(msg_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(msg_id.encode(), digest_size=8).digest(), "big",
                          signed=True)


def _pack(seen: Seen) -> int:
    return seen.offset << _PARTITION_BITS | seen.partition


class _Segment:
    """Arrays frozen for the file: sorted hashes, places (or _GONE), times; read by lookups
    until their rows are in (and committed to) the file. ``cut``: the latest prune queued
    after them, whose delete has not run yet (an id at or before it is forgotten already)."""

    __slots__ = ("at", "cut", "done", "gone", "h", "where")

    def __init__(self, h: array[int], where: array[int], at: array[float], gone: int) -> None:
        self.h, self.where, self.at, self.gone = h, where, at, gone
        self.done = 0  # entries written to the file so far
        self.cut = float("-inf")

    def get(self, key: int) -> tuple[bool, Seen | None]:
        """(held here, its value: None for an id removed or pruned)."""
        h = self.h
        i = bisect_left(h, key)
        if i == len(h) or h[i] != key:
            return False, None
        where, at = self.where[i], self.at[i]
        if where == _GONE or at <= self.cut:
            return True, None
        return True, Seen(at, where & _PARTITION_MASK, where >> _PARTITION_BITS)


class _Prune:
    """A prune's delete, queued behind the segments frozen before it."""

    __slots__ = ("cut",)

    def __init__(self, cut: float) -> None:
        self.cut = cut


class SeenIds:
    """``get``, ``[id] = Seen``, ``pop``: the part of a mapping the router and the ids topic's
    view use (ids cannot be listed: only their hashes are kept).

    ``path``: the file the ids older than the last ``hot`` move to (created afresh, whatever
    it held: it is a cache of the ids topic, which the view reads from its start); without it
    every id stays in memory. ``chunk``: the rows of file work one call does at most (a spill's
    or a prune's), one call in ``chunk // 4`` sets or pops while there is work."""

    def __init__(self, merge_at: int = 4096, path: str | None = None, hot: int = HOT,
                 chunk: int = CHUNK) -> None:
        self._h = array("q")  # sorted hashes
        self._where = array("q")  # offset << 16 | partition, or _GONE
        self._at = array("d")
        self._gone = 0  # entries of the arrays that are _GONE
        # ids not in the arrays yet; None: removed (with a file: hides the id's row there)
        self._new: dict[int, Seen | None] = {}
        self._hot = max(1, hot)
        # with a file, ids pending count in memory too: at most ``hot`` of them; and merges
        # of at most _FILE_MERGE_AT, a call of a few ms into arrays of at most ``hot``
        self._merge_at = max(1, merge_at if path is None
                             else min(merge_at, self._hot, _FILE_MERGE_AT))
        self.forgotten = 0  # ids pruned so far (with a file: as the deletes run)
        self._db: sqlite3.Connection | None = None
        # the file's work, oldest first: segments to write, prunes to run
        self._jobs: deque[_Segment | _Prune] = deque()
        self._frozen: deque[_Segment] = deque()  # segments not in the file yet, oldest first
        self._backlog = 0  # their rows not written yet
        self._cuts: list[float] = []  # the cuts of the prunes not run yet
        self._file_cut = float("-inf")  # a row at or before it is pruned already
        self._txn = False  # a job's transaction is open
        self._chunk = max(1, chunk)
        self._every = max(1, self._chunk // _PACE)
        self._ticks = 0
        if path is not None:
            self._db = _open(path)

    def close(self) -> None:
        """Close the file (its ids are forgotten with it, and the work not done yet)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def _index(self, h: int) -> int:
        i = bisect_left(self._h, h)
        return i if i < len(self._h) and self._h[i] == h else -1

    def _get(self, h: int) -> Seen | None:
        new = self._new
        if h in new:
            return new[h]
        i = self._index(h)
        if i < 0:
            for seg in reversed(self._frozen):  # the newest value hides older ones
                held, seen = seg.get(h)
                if held:
                    return seen
            return None if self._db is None else self._stored(h)
        where = self._where[i]
        if where == _GONE:
            return None
        return Seen(self._at[i], where & _PARTITION_MASK, where >> _PARTITION_BITS)

    def _stored(self, h: int) -> Seen | None:
        assert self._db is not None
        row = self._db.execute("SELECT w, at FROM ids WHERE h = ?", (h,)).fetchone()
        if row is None or row[1] <= self._file_cut:
            return None
        return Seen(row[1], row[0] & _PARTITION_MASK, row[0] >> _PARTITION_BITS)

    def get(self, msg_id: str, default: Seen | None = None) -> Seen | None:
        seen = self._get(_hash(msg_id))
        return default if seen is None else seen

    def __contains__(self, msg_id: object) -> bool:
        return isinstance(msg_id, str) and self._get(_hash(msg_id)) is not None

    def __setitem__(self, msg_id: str, seen: Seen) -> None:
        if not 0 <= seen.partition <= _PARTITION_MASK or seen.offset < 0:
            raise ValueError(f"cannot keep {seen}")
        if self._jobs:
            self._pace()
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
            if self._db is not None and len(self._h) >= self._hot:
                self.spill()

    def pop(self, msg_id: str, default: Seen | None = None) -> Seen | None:
        if self._jobs:
            self._pace()
        h = _hash(msg_id)
        if self._db is None:
            seen = self._new.pop(h, None)
            if seen is not None:
                return seen
        seen = self._get(h)
        if seen is None:
            return default
        i = -1 if h in self._new else self._index(h)
        if i < 0:  # pending, or only in a segment or the file: a pending removal hides it
            self._new[h] = None
            if len(self._new) >= max(self._merge_at, len(self._h) >> _PENDING_SHARE):
                self.merge()
            return seen
        self._where[i] = _GONE
        self._gone += 1
        if self._gone >= max(self._merge_at, len(self._h) >> 2):
            if self._db is None:
                self._compact(None)
            else:
                self.spill()
        return seen

    def __len__(self) -> int:
        """The ids kept. With a file: the arrays move there first (all the file's work done
        now), then its rows are counted (a scan of the file: for tests and diagnostics, not
        the hot path)."""
        if self._db is None:
            return len(self._h) - self._gone + len(self._new)
        self.spill()
        self.flush()
        return int(self._db.execute("SELECT count(*) FROM ids").fetchone()[0])

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
            if seen is None:
                where[dst] = _GONE
                at[dst] = 0.0
                self._gone += 1
            else:
                where[dst] = _pack(seen)
                at[dst] = seen.at
            end = i
        self._new = {}

    def spill(self) -> None:
        """Freeze every id of memory into a segment that the file's work writes (rows replaced,
        removed ids deleted) a chunk at a time, in one transaction and hash order (the B-tree's
        pages are visited in order, once each); lookups read the segment until it is done. The
        arrays start empty (new ones: the old ones' memory goes back once written)."""
        if self._db is None:
            return
        self.merge()
        if not self._h:
            return
        seg = _Segment(self._h, self._where, self._at, self._gone)
        self._jobs.append(seg)
        self._frozen.append(seg)
        self._backlog += len(seg.h)
        self._h, self._where, self._at = array("q"), array("q"), array("d")
        self._gone = 0

    def prune(self, older_than: float) -> None:
        """Forget the ids accepted at or before ``older_than`` (``forgotten`` counts them).

        With a file this is at once for lookups and later for the file: memory is frozen as
        a segment (one place for every id: a row removed in the file is not hidden by memory),
        then a delete of the rows at or before the cut queued behind it; until it has run,
        lookups treat a row or a segment's entry at or before it as gone."""
        if self._db is None:
            self.merge()
            self.forgotten += self._compact(older_than)
            return
        self.spill()
        for seg in self._frozen:
            seg.cut = max(seg.cut, older_than)
        self._jobs.append(_Prune(older_than))
        self._cuts.append(older_than)
        self._file_cut = max(self._cuts)

    def flush(self) -> None:
        """Do all the file's work now (tests, ``len``)."""
        while self._jobs:
            self._step()

    def _pace(self) -> None:
        """A chunk of the file's work every ``chunk // 4`` calls: four rows a call, against at
        most two an id (written once, deleted once). Behind by more than ``hot`` rows (a long
        prune ahead of the spills), a chunk every call."""
        self._ticks += 1
        if self._ticks >= self._every or self._backlog > self._hot:
            self._ticks = 0
            self._step()

    def _step(self) -> None:
        """One chunk of the oldest job: ``chunk`` rows of a segment written, or up to ``chunk``
        rows at or before a prune's cut deleted (by the time index); the job's transaction
        begins at its first chunk and commits after its last (no journal: a commit writes
        the page cache's dirty pages, at most its 2 MiB)."""
        db, job, n = self._db, self._jobs[0], self._chunk
        assert db is not None
        if not self._txn:
            db.execute("BEGIN")
            self._txn = True
        if isinstance(job, _Segment):
            lo = job.done
            hi = min(lo + n, len(job.h))
            h, where, at = job.h[lo:hi], job.where[lo:hi], job.at[lo:hi]
            db.executemany("INSERT OR REPLACE INTO ids (h, w, at) VALUES (?, ?, ?)",
                           ((k, w, t) for k, w, t in zip(h, where, at, strict=True)
                            if w != _GONE))
            if job.gone:
                db.executemany("DELETE FROM ids WHERE h = ?",
                               ((k,) for k, w in zip(h, where, strict=True) if w == _GONE))
            job.done = hi
            self._backlog -= hi - lo
            finished = hi == len(job.h)
        else:
            deleted = db.execute("DELETE FROM ids WHERE h IN (SELECT h FROM ids "
                                 "WHERE at <= ? LIMIT ?)", (job.cut, n)).rowcount
            self.forgotten += deleted
            finished = deleted < n
        if not finished:
            return
        db.execute("COMMIT")
        self._txn = False
        self._jobs.popleft()
        if isinstance(job, _Segment):
            self._frozen.popleft()  # its rows are the file's now (the oldest segment)
        else:
            self._cuts.remove(job.cut)
            self._file_cut = max(self._cuts, default=float("-inf"))

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


def _open(path: str) -> sqlite3.Connection:
    """A new file for the ids that left memory: no journal and no syncs (a crash loses
    nothing that the ids topic does not hold; the next start makes the file again), a page
    cache of ``_CACHE_KIB`` and no memory map, so the file's pages count in the kernel's page
    cache and not in the worker's RSS."""
    for stale in (path, path + "-journal", path + "-wal", path + "-shm"):
        try:
            os.unlink(stale)
        except FileNotFoundError:
            pass
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=True)  # BEGIN by hand
    for pragma in ("journal_mode = OFF", "synchronous = OFF", "locking_mode = EXCLUSIVE",
                   f"cache_size = -{_CACHE_KIB}", "mmap_size = 0", "temp_store = FILE"):
        db.execute(f"PRAGMA {pragma}")
    db.execute("CREATE TABLE ids (h INTEGER PRIMARY KEY, w INTEGER NOT NULL, "
               "at REAL NOT NULL)")
    db.execute("CREATE INDEX ids_at ON ids (at)")  # prune by age
    return db
