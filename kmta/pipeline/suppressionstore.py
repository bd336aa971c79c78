"""The suppression records themselves (reason, detail, scope), bounded in memory: an sqlite
file on local disk that keeps, in the same transactions, the topic offsets it has applied. The
panel and ``kmta suppression list|export|remove`` read the records from it; the route loop
needs only the key hashes (``kmta/pipeline/suppression.py``).

Why a file with offsets: the compacted topic holds 10 M records at scale, and reading it whole
takes ~15 min (about 90 us a record through the three indexes below). A store that knows the
offsets it has applied resumes from there at start and reads only what changed meanwhile
(``sync``; ``start_offsets`` decides where each partition starts). It is rebuilt from the
topic only when

* the file is missing (or of an older layout, or unreadable as sqlite),
* the topic was reset: deleted and made again, or emptied (an offset stored past the
  partition's end, or below its start: what lay between was deleted unseen), or its
  partitions changed.

A crash loses at most the open transaction, whose offsets are lost with it: those records are
read again, and re-applying a suffix of a compacted log is harmless (the latest record per key
wins). The panel's questions are index searches:

* counts per reason: kept as numbers (stored with each commit), updated as records come and go;
* a page of records, newest first, or of one domain (``@gmail.com``, or ``gmail.com``);
* addresses that start with a prefix (``ann@``, ``ann.smith``);
* how many match, counted up to ``COUNT_CAP``;
* every record in address order, streamed (``kmta suppression list|export``).

Search is by prefix and domain, not substring: a substring search cannot use an index and reads
all 10 M rows (seconds; ``kmta suppression list --search`` does that, streaming).
``scripts/bench_panel_suppression.py`` and ``scripts/bench_panel_start.py`` print the memory,
the times and the start times. Not thread-safe by itself: the board's lock serialises the feed
and the web app.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from collections.abc import Iterator, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from kmta.config import Config
from kmta.pipeline.kafkaio import client_options, topic_partitions
from schemas.suppression import Reason, Suppression

log = logging.getLogger(__name__)

__all__ = ["COUNT_CAP", "SuppressionStore", "apply_value", "mark", "parse_record", "positions",
           "start_offsets", "sync"]

COUNT_CAP = 100_000
LAYOUT = "2"  # bump when the tables change: an older file is rebuilt
_HIGH = "\U0010ffff"  # sorts after every character: the end of a prefix range
_BATCH = 20000  # changes per transaction while reading: a commit per record costs more


def parse_record(value: bytes) -> Suppression:
    """A suppression topic value as a record; a record of before scopes (``{"address",
    "reason", "category", "at"}``, written by older workers) reads as a global hard bounce.
    ValueError when it is neither."""
    try:
        return Suppression.model_validate_json(value)
    except ValueError:
        pass
    try:
        doc = json.loads(value)
        return Suppression(address=doc["address"], reason=Reason.HARD_BOUNCE,
                           category=doc.get("category"),
                           detail=str(doc.get("reason") or "")[:300] or None,
                           at=float(doc.get("at") or 0))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"not a suppression record: {e}") from None


def start_offsets(stored: Mapping[int, int], begin: Mapping[int, int],
                  end: Mapping[int, int]) -> dict[int, int] | None:
    """Where to read each partition from, given the offsets a store has applied and the
    partitions' start and end offsets now; None when the store must be rebuilt from the
    beginning (the topic was reset, or its partitions changed). An empty store starts at the
    beginning."""
    if not stored:
        return dict(begin)
    if set(stored) != set(end):
        return None
    for p, nxt in stored.items():
        if nxt > end[p] or nxt < begin[p]:
            return None
    return dict(stored)


class SuppressionStore:
    """``path``: the file (made when missing); None: sqlite's own temporary file, deleted on
    close (``kmta status``, tests)."""

    def __init__(self, path: str | None = None, cache_kib: int = 32768) -> None:
        self.path = path
        self._cache_kib = cache_kib
        self.applied = 0  # records applied by this process (the tests' and benchmark's check)
        self.rebuilt = False  # whether this process started from an empty store
        self._open()

    # ------------------------------------------------------------------ the file
    def _open(self) -> None:
        if self.path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            try:
                self._connect(self.path)
                return
            except sqlite3.DatabaseError as e:  # not a database, a torn file
                log.warning("suppression store %s unreadable (%s): rebuilding it", self.path, e)
                self._db.close()
                self._unlink()
        self._connect(self.path or "")

    def _connect(self, path: str) -> None:
        db = self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if path:
            db.execute("PRAGMA journal_mode=WAL")
            # rebuildable from the topic: a crash may lose the last transaction, whose
            # offsets are lost with it, so those records are read again
            db.execute("PRAGMA synchronous=NORMAL")
        else:  # nothing here outlives the process: no journal, no syncs
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
        db.execute(f"PRAGMA cache_size=-{int(self._cache_kib)}")
        db.execute("PRAGMA temp_store=FILE")  # sorts of 10 M rows go to disk, not memory
        db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
        row = db.execute("SELECT v FROM meta WHERE k='layout'").fetchone()
        if row is not None and row[0] != LAYOUT:
            db.close()
            log.warning("suppression store %s: layout %s, not %s: rebuilding it", path,
                        row[0], LAYOUT)
            self._unlink()
            self._connect(path)
            return
        fresh = row is None
        db.execute("BEGIN")
        db.execute("INSERT OR REPLACE INTO meta VALUES ('layout', ?)", (LAYOUT,))
        db.execute("CREATE TABLE IF NOT EXISTS r (key TEXT PRIMARY KEY, address TEXT NOT NULL, "
                   "domain TEXT NOT NULL, scope TEXT NOT NULL, reason TEXT NOT NULL, "
                   "at REAL NOT NULL, doc TEXT NOT NULL)")
        db.execute("CREATE INDEX IF NOT EXISTS r_address ON r (address, at)")
        db.execute("CREATE INDEX IF NOT EXISTS r_domain ON r (domain, at)")
        db.execute("CREATE INDEX IF NOT EXISTS r_at ON r (at)")
        db.execute("CREATE TABLE IF NOT EXISTS offsets (topic TEXT, part INTEGER, "
                   "next INTEGER NOT NULL, PRIMARY KEY (topic, part))")
        db.execute("CREATE TABLE IF NOT EXISTS counts (reason TEXT PRIMARY KEY, "
                   "n INTEGER NOT NULL)")
        self._counts = {r.value: 0 for r in Reason}
        self._counts.update(dict(db.execute("SELECT reason, n FROM counts")))
        self._total = sum(self._counts.values())
        self._pending = 0
        self.rebuilt = self.rebuilt or fresh

    def _unlink(self) -> None:
        assert self.path is not None
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.unlink(self.path + suffix)
            except FileNotFoundError:
                pass

    def reset(self) -> None:
        """Empty the store (the topic was reset): a file is deleted and made again, faster
        than deleting 10 M rows."""
        self._db.execute("ROLLBACK")
        self._db.close()
        if self.path is not None:
            self._unlink()
        self.rebuilt = True
        self._connect(self.path or "")

    def flush(self) -> None:
        """Commit what was applied, with the counts and the offsets marked."""
        db = self._db
        db.executemany("INSERT OR REPLACE INTO counts VALUES (?, ?)", self._counts.items())
        db.execute("COMMIT")
        db.execute("BEGIN")
        self._pending = 0

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._db.close()

    # ------------------------------------------------------------------ writing
    def apply(self, key: str, rec: Suppression | None) -> None:
        """A record under its topic key, or its removal (None)."""
        db = self._db
        old = db.execute("SELECT reason FROM r WHERE key=?", (key,)).fetchone()
        if old is not None:
            self._counts[old[0]] -= 1
            self._total -= 1
        if rec is None:
            if old is not None:
                db.execute("DELETE FROM r WHERE key=?", (key,))
        else:
            db.execute("INSERT OR REPLACE INTO r VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (key, rec.address, rec.address.rpartition("@")[2], rec.scope,
                        rec.reason.value, rec.at, rec.to_json().decode()))
            self._counts[rec.reason.value] += 1
            self._total += 1
        self.applied += 1
        self._pending += 1
        if self._pending >= _BATCH:
            self.flush()

    def mark(self, topic: str, partition: int, nxt: int) -> None:
        """The next offset to read of a partition, committed with the next flush."""
        self._db.execute("INSERT OR REPLACE INTO offsets VALUES (?, ?, ?)",
                         (topic, partition, nxt))

    def offsets(self, topic: str) -> dict[int, int]:
        rows = self._db.execute("SELECT part, next FROM offsets WHERE topic=?", (topic,))
        return {p: n for p, n in rows}

    # ------------------------------------------------------------------ reading
    def counts(self) -> dict[str, int]:
        """Records per reason (every reason, zeros included) and the total."""
        return {**self._counts, "total": self._total}

    def __len__(self) -> int:
        return self._total

    def get(self, key: str) -> Suppression | None:
        row = self._db.execute("SELECT doc FROM r WHERE key=?", (key,)).fetchone()
        return Suppression.model_validate_json(row[0]) if row else None

    def _where(self, query: str | None) -> tuple[str, tuple[Any, ...], str]:
        """The condition a search means, its parameters and the order of its rows."""
        q = (query or "").strip().lower()
        newest = " ORDER BY at DESC"
        if not q:
            return "1", (), newest
        if q.startswith("@"):
            return "domain=?", (q[1:],), newest
        if "@" not in q and "." in q and self._db.execute(
                "SELECT 1 FROM r WHERE domain=? LIMIT 1", (q,)).fetchone():
            return "domain=?", (q,), newest
        return "address>=? AND address<?", (q, q + _HIGH), " ORDER BY address, at DESC"

    def rows(self, query: str | None, limit: int = 20, offset: int = 0) -> list[dict[str, Any]]:
        """A page of the records a search finds: ``@domain`` or a domain name: that domain's,
        newest first; else the addresses that start with ``query``; empty: all, newest
        first."""
        where, args, order = self._where(query)
        cur = self._db.execute(f"SELECT key, doc FROM r WHERE {where}{order} LIMIT ? OFFSET ?",
                               (*args, max(0, limit), max(0, offset)))
        out = []
        for key, doc in cur:
            r = Suppression.model_validate_json(doc)
            out.append({"id": key, "address": r.address,
                        "scope": r.scope if r.value is None else f"{r.scope}:{r.value}",
                        "reason": r.reason.value, "category": r.category, "detail": r.detail,
                        "message": r.id, "by": r.by, "at": r.at})
        return out

    def matches(self, query: str | None, cap: int = COUNT_CAP) -> int:
        """How many records a search finds, counted up to ``cap`` (``cap`` means at least)."""
        if not (query or "").strip():
            return min(self._total, cap)
        where, args, _ = self._where(query)
        row = self._db.execute(f"SELECT count(*) FROM (SELECT 1 FROM r WHERE {where} LIMIT ?)",
                               (*args, cap)).fetchone()
        return int(row[0])

    def records(self, contains: str | None = None, reason: str | None = None,
                chunk: int = 1000) -> Iterator[Suppression]:
        """Every record in address order (an address's records by key), streamed: at most
        ``chunk`` rows are in memory at a time. ``contains``: a substring of the address (a
        scan); ``reason``: only that reason."""
        where, args = ["1"], []
        if contains:
            where.append("instr(address, ?) > 0")
            args.append(contains.lower())
        if reason:
            where.append("reason = ?")
            args.append(reason)
        # a cursor of its own: the panel and the feed may use the connection meanwhile
        cur = self._db.cursor()
        cur.execute(f"SELECT doc FROM r WHERE {' AND '.join(where)} ORDER BY address, key",
                    args)
        while rows := cur.fetchmany(chunk):
            for (doc,) in rows:
                yield Suppression.model_validate_json(doc)

    def scope_counts(self) -> dict[tuple[str, str], int]:
        """Records per (reason, scope): one pass over the table, in sqlite."""
        rows = self._db.execute("SELECT reason, scope, count(*) FROM r GROUP BY reason, scope")
        return {(reason, scope): int(n) for reason, scope, n in rows}


def apply_value(store: SuppressionStore, key: bytes | None, value: bytes | None) -> bool:
    """One record of the topic into the store; False when it is no suppression record."""
    k = (key or b"").decode("utf-8", "replace")
    if value is None:
        store.apply(k, None)
        return True
    try:
        rec = parse_record(value)
    except ValueError:
        log.warning("suppression record %s unreadable", k)
        return False
    store.apply(k or rec.key(), rec)
    return True


async def positions(consumer: AIOKafkaConsumer, store: SuppressionStore,
                    tps: list[TopicPartition]) -> None:
    """Seek the suppression partitions ``tps`` to where ``store`` resumes (emptying it first
    when the topic was reset)."""
    if not tps:
        return
    topic = tps[0].topic
    begin = {tp.partition: o for tp, o in (await consumer.beginning_offsets(tps)).items()}
    end = {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
    start = start_offsets(store.offsets(topic), begin, end)
    if start is None:
        log.warning("suppression topic %s was reset (store %s had offsets %s, the topic "
                    "spans %s..%s): rebuilding the store", topic, store.path,
                    store.offsets(topic), begin, end)
        store.reset()
        start = begin
    for tp in tps:
        consumer.seek(tp, start[tp.partition])


async def mark(consumer: AIOKafkaConsumer, store: SuppressionStore,
               tps: list[TopicPartition]) -> None:
    """Record the consumer's positions (past transaction markers too) and commit."""
    for tp in tps:
        store.mark(tp.topic, tp.partition, await consumer.position(tp))
    store.flush()


async def sync(config: Config, store: SuppressionStore, timeout: float = 3600.0) -> int:
    """Bring ``store`` up to the topic's end offsets as of now; the records read."""
    topic = config.topic("suppression")
    c = AIOKafkaConsumer(**client_options(config), enable_auto_commit=False,
                         auto_offset_reset="earliest", isolation_level="read_committed",
                         fetch_max_wait_ms=100, max_partition_fetch_bytes=4 << 20)
    await c.start()
    n = 0
    try:
        tps = await topic_partitions(config, [topic])
        c.assign(tps)
        await positions(c, store, tps)
        end = await c.end_offsets(tps)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        async def behind() -> bool:
            for tp in tps:
                if await c.position(tp) < end[tp]:
                    return True
            return False
        while await behind():
            if loop.time() > deadline:
                raise TimeoutError(f"{topic}: not read to its end in {timeout:.0f} s")
            batch = await c.getmany(timeout_ms=500, max_records=20000)
            for records in batch.values():
                for r in records:
                    apply_value(store, r.key, r.value)
                    n += 1
            await mark(c, store, tps)
        await mark(c, store, tps)
    finally:
        await c.stop()
    return n
