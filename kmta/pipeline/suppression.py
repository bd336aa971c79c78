"""The suppression list as the route loop reads it: a set of 64-bit key hashes, kept in an
sqlite table on local disk (tailed from the compacted ``suppression`` topic) and looked up in
memory (``kmta/pipeline/hashset.py``).

Why (issue 11's target: 10 M addresses, worker RSS < 500 MB, lookup < 50 us):

* a dict of 10 M addresses with their records costs 2-3 GB; a Python set of 10 M hashes ~1 GB;
  a sorted array of them 80 MB, searched by ``bisect`` in about 1 us;
* the sqlite table (137 MB at 10 M keys) survives a restart together with the topic offsets
  it has applied (one transaction per batch), so a restarted worker reads only what is new
  instead of 10 M records, and loads the array from the file (2-4 s at 10 M); a lost or
  corrupt file is rebuilt from the topic (delete it);
* lookups used to query the file: 7-10 us a query from Python and the file's pages resident
  through a memory map (p99 61-93 us per message on this loaded machine); the array halves the
  memory and does one search in C per key (``scripts/bench_suppression.py`` prints both).

A false positive needs a 64-bit BLAKE2b collision with one of the listed keys: about 5e-13 per
lookup at 10 M keys. The records themselves (reason, detail) are read from the topic by the
CLI and the panel, not kept here. Stdlib sqlite3 only, no faust: the view runs beside faust's
agents like the other views.
"""
from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import struct
from array import array
from collections.abc import Iterable, Iterator

from aiokafka import AIOKafkaConsumer, TopicPartition

from kmta.config import Config
from kmta.pipeline.hashset import SortedHashes
from kmta.pipeline.kafkaio import VIEW_WAIT_MS, client_options, stop_loop, topic_partitions
from kmta.pipeline.outputs import Out
from kmta.pipeline.suppressionstore import start_offsets
from schemas import ControlRecord
from schemas.suppression import Suppression, SuppressionChange

log = logging.getLogger(__name__)

__all__ = ["SuppressionIndex", "SuppressionView", "change_outs", "claim", "key_hash"]


_BLAKE2B_8 = hashlib.blake2b(digest_size=8)
_SIGNED_64 = struct.Struct(">q").unpack


def key_hash(key: str) -> int:
    """Signed 64-bit BLAKE2b of a record key (sqlite integers are signed). Copying a prepared
    hash object is about 3x faster than building one with its parameters each time."""
    h = _BLAKE2B_8.copy()
    h.update(key.encode("utf-8"))
    return int(_SIGNED_64(h.digest())[0])


class SuppressionIndex:
    """The hashes of the suppression keys present (in memory, ``SortedHashes``), and the file
    they and the topic offsets applied are kept in (sqlite, written only)."""

    def __init__(self, path: str, cache_kib: int = 8192, load: bool = True) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # rebuildable from the topic: a crash may lose the last batch, whose offsets are lost
        # with it (same transaction), so it is read again
        self._db.execute("PRAGMA synchronous=NORMAL")
        # lookups never read the file: a small cache serves the writes
        self._db.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
        self._db.execute("CREATE TABLE IF NOT EXISTS s (h INTEGER PRIMARY KEY) WITHOUT ROWID")
        self._db.execute("CREATE TABLE IF NOT EXISTS offsets (topic TEXT, part INTEGER, "
                         "next INTEGER, PRIMARY KEY (topic, part))")
        self._set: SortedHashes | None = None
        if load:
            for _ in self.loading():
                pass

    def loading(self, chunk: int = 262144) -> Iterator[int]:
        """Read the hashes into memory (in key order, so the array is sorted as read),
        yielding the count so far after each chunk: a caller on an event loop gives it a
        turn in between (10 M hashes take 2-4 s)."""
        members = array("q")
        cur = self._db.execute("SELECT h FROM s")
        while rows := cur.fetchmany(chunk):
            members.extend([r[0] for r in rows])
            yield len(members)
        self._set = SortedHashes(members)

    def _front(self) -> SortedHashes:
        if self._set is None:
            raise RuntimeError("suppression index not loaded yet")
        return self._set

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key_hash(key) in self._front()

    def contains_any(self, keys: list[str]) -> bool:
        """Whether any of the keys is present (the route loop's 1-3 keys a message)."""
        s = self._front()
        return any(key_hash(k) in s for k in keys)

    def __len__(self) -> int:
        if self._set is not None:
            return len(self._set)
        return int(self._db.execute("SELECT count(*) FROM s").fetchone()[0])

    def apply(self, changes: Iterable[tuple[str, bool]],
              offsets: dict[tuple[str, int], int] | None = None) -> None:
        """Add (True) or remove (False) keys, in order, and record the next offsets to read,
        in one transaction; the set in memory follows once the file has them."""
        db = self._db
        done: list[tuple[int, bool]] = []
        db.execute("BEGIN")
        try:
            for key, present in changes:
                h = key_hash(key)
                if present:
                    db.execute("INSERT OR IGNORE INTO s VALUES (?)", (h,))
                else:
                    db.execute("DELETE FROM s WHERE h=?", (h,))
                done.append((h, present))
            for (topic, part), nxt in (offsets or {}).items():
                db.execute("INSERT OR REPLACE INTO offsets VALUES (?, ?, ?)", (topic, part, nxt))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if self._set is not None:
            for h, present in done:
                if present:
                    self._set.add(h)
                else:
                    self._set.discard(h)

    def add_hashes(self, hashes: Iterable[int]) -> None:
        """Bulk load into the file (benchmark, rebuild): hashes already computed. A loaded
        set reads them again."""
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR IGNORE INTO s VALUES (?)", ((h,) for h in hashes))
        self._db.execute("COMMIT")
        if self._set is not None:
            for _ in self.loading():
                pass

    def nbytes(self) -> int:
        """Memory held by the set of hashes."""
        return self._set.nbytes() if self._set is not None else 0

    def reset(self) -> None:
        """Forget every key and offset (the topic was reset: it is read again from its start)."""
        self._db.execute("BEGIN")
        self._db.execute("DELETE FROM s")
        self._db.execute("DELETE FROM offsets")
        self._db.execute("COMMIT")
        if self._set is not None:
            self._set = SortedHashes(array("q"))

    def offsets(self, topic: str) -> dict[int, int]:
        rows = self._db.execute("SELECT part, next FROM offsets WHERE topic=?", (topic,))
        return {p: n for p, n in rows}

    def close(self) -> None:
        self._db.close()


def _present(value: bytes | None) -> bool:
    """A record adds its key unless it is a tombstone; undecodable values count as present
    (a record kmta did not write, under a key somebody wanted suppressed)."""
    if value is None:
        return False
    try:
        doc = json.loads(value)
    except ValueError:
        return True
    return doc is not None


def claim(directory: str, name: str) -> tuple[int, str]:
    """The file for a process called ``name`` (a worker's index, the panel's store):
    ``<name>.sqlite``, or ``<name>-2`` ... when another process on this data_dir holds it (an
    exclusive flock on ``<file>.lock`` for as long as the process runs). A stable name means a
    restarted process reuses its file and reads only what is new."""
    os.makedirs(directory, exist_ok=True)
    for i in range(1, 1000):
        stem = name if i == 1 else f"{name}-{i}"
        path = os.path.join(directory, f"{stem}.sqlite")
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return fd, path
    raise RuntimeError(f"{directory}: no free suppression index slot for {name}")


class SuppressionView:
    """Tails the suppression topic into a ``SuppressionIndex`` from the offsets it holds.

    ``ready`` is set once the index has caught up with the end offsets seen at start: the
    route loop waits for it, so no message is routed against a half-read list."""

    def __init__(self, config: Config, name: str) -> None:
        self._config = config
        self.topic = config.topic("suppression")
        self._lock_fd, path = claim(os.path.join(config.data_dir, "suppression"), name)
        self.index = SuppressionIndex(path, load=False)
        self.ready = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self._end: dict[int, int] = {}
        self._next: dict[int, int] = {}
        self.rebuilds = 0  # times the topic was found reset and the index read again

    async def start(self) -> None:
        for _ in self.index.loading():
            await asyncio.sleep(0)  # the brain's agents share this loop
        c = AIOKafkaConsumer(**client_options(self._config),
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             fetch_max_wait_ms=VIEW_WAIT_MS, max_partition_fetch_bytes=4 << 20)
        await c.start()
        tps = await topic_partitions(self._config, [self.topic])
        c.assign(tps)
        self._consumer = c
        await self._position(tps)
        self._end = {tp.partition: o for tp, o in (await c.end_offsets(tps)).items()}
        self._check_ready()
        self._task = asyncio.create_task(self._run(), name=f"view:{self.topic}")

    async def _position(self, tps: list[TopicPartition]) -> None:
        """Seek to the offsets the index has applied, or rebuild it from the beginning when
        the topic was reset (deleted and made again, emptied, records deleted below what the
        index applied, partitions changed): the panel's store decides alike
        (``suppressionstore.start_offsets``)."""
        c = self._consumer
        assert c is not None
        stored = self.index.offsets(self.topic)
        begin = {tp.partition: o for tp, o in (await c.beginning_offsets(tps)).items()}
        end = {tp.partition: o for tp, o in (await c.end_offsets(tps)).items()}
        if stored and set(stored) <= set(end):  # a partition without records has no offset
            stored = {p: stored.get(p, begin[p]) for p in end}
        start = start_offsets(stored, begin, end)
        if start is None:
            log.warning("suppression topic %s was reset (index %s had offsets %s, the topic "
                        "spans %s..%s): rebuilding the index", self.topic, self.index.path,
                        stored, begin, end)
            self.index.reset()
            self.rebuilds += 1
            start = begin
        for tp in tps:
            c.seek(tp, start[tp.partition])
            self._next[tp.partition] = start[tp.partition]

    def _check_ready(self) -> None:
        if not self.ready.is_set() and all(self._next.get(p, 0) >= e
                                           for p, e in self._end.items()):
            self.ready.set()

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(
                timeout_ms=VIEW_WAIT_MS if self.ready.is_set() else 200, max_records=20000)
            changes: list[tuple[str, bool]] = []
            offsets: dict[tuple[str, int], int] = {}
            if any(records and records[0].offset < self._next.get(tp.partition, 0)
                   for tp, records in batch.items()):
                # offsets went back: the topic was made again under us (the consumer's
                # auto_offset_reset moved to its start); its old keys must not stay
                await self._position(list(self._consumer.assignment()))
                continue
            for tp, records in batch.items():
                for r in records:
                    if r.key:
                        changes.append((r.key.decode("utf-8", "replace"), _present(r.value)))
                    offsets[(self.topic, tp.partition)] = r.offset + 1
                    self._next[tp.partition] = r.offset + 1
            if offsets:
                # sqlite is fast enough in the loop for a batch: ~2 us a key
                self.index.apply(changes, offsets)
            if not self.ready.is_set():
                # the position, not the last record: transaction markers take offsets too
                for tp in self._consumer.assignment():
                    self._next[tp.partition] = max(self._next.get(tp.partition, 0),
                                                   await self._consumer.position(tp))
                self._check_ready()

    async def stop(self) -> None:
        await stop_loop(self._task, self._consumer)
        self.index.close()
        os.close(self._lock_fd)


def change_outs(config: Config, op: str, key: str, record: Suppression | None, actor: str,
                now: float, reason: str | None = None) -> list[Out]:
    """An operator's add or removal: the record (or tombstone) and its audit entry."""
    audit = ControlRecord(applied=True, worker=actor, timestamp=now,
                          suppression=SuppressionChange(op=op, key=key, record=record,  # type: ignore[arg-type]
                                                        actor=actor, reason=reason))
    value = record.to_json() if op == "add" and record is not None else None
    return [Out(config.topic("suppression"), value, key.encode()),
            Out(config.topic("audit"), audit.to_json(), None)]
