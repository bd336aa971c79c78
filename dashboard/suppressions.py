"""The panel's suppression records, bounded in memory: an sqlite database of sqlite's own
temporary kind (``connect("")``: a file in the temp directory, deleted on close, of which at
most ``cache_kib`` is held in memory), rebuilt from the topic at every start like the rest of
the board.

The old board held every record as a pydantic object in a dict: about 1 KB each, 10 GB at
10 M records. Here a record is one row (the key, address, domain, reason, time and its JSON)
with three indexes, so the panel's questions are index searches:

* counts per reason: kept as numbers, updated as records come and go;
* a page of records, newest first, or of one domain (``@gmail.com``, or ``gmail.com``);
* addresses that start with a prefix (``ann@``, ``ann.smith``);
* how many match, counted up to ``COUNT_CAP``.

Search is by prefix and domain, not substring: a substring search cannot use an index and
reads all 10 M rows (seconds). ``scripts/bench_panel_suppression.py`` prints the memory and
the times. Not thread-safe by itself: the board's lock serialises the feed and the web app.
"""
from __future__ import annotations

import sqlite3
from typing import Any

from schemas.suppression import Reason, Suppression

__all__ = ["COUNT_CAP", "SuppressionRecords"]

COUNT_CAP = 100_000
_HIGH = "\U0010ffff"  # sorts after every character: the end of a prefix range


class SuppressionRecords:
    def __init__(self, cache_kib: int = 32768) -> None:
        self._db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        # nothing here outlives the process: no journal, no syncs
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
        self._db.execute("PRAGMA temp_store=FILE")
        self._db.execute("CREATE TABLE r (key TEXT PRIMARY KEY, address TEXT NOT NULL, "
                         "domain TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL, "
                         "doc TEXT NOT NULL)")
        self._db.execute("CREATE INDEX r_address ON r (address, at)")
        self._db.execute("CREATE INDEX r_domain ON r (domain, at)")
        self._db.execute("CREATE INDEX r_at ON r (at)")
        self._counts = {r.value: 0 for r in Reason}
        self._total = 0
        self._pending = 0
        self._db.execute("BEGIN")

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
            db.execute("INSERT OR REPLACE INTO r VALUES (?, ?, ?, ?, ?, ?)",
                       (key, rec.address, rec.address.rpartition("@")[2], rec.reason.value,
                        rec.at, rec.to_json().decode()))
            self._counts[rec.reason.value] += 1
            self._total += 1
        # one transaction per 20,000 changes: a commit per record would cost more than it
        self._pending += 1
        if self._pending >= 20000:
            db.execute("COMMIT")
            db.execute("BEGIN")
            self._pending = 0

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

    def close(self) -> None:
        self._db.close()
