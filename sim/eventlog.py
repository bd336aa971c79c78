"""JSONL log of what the simulated providers saw: one line per SMTP event."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import IO, Any

__all__ = ["EventLog"]

EVENTS = frozenset(
    {
        "connect",
        "refuse",
        "mail",
        "rcpt",
        "accepted",
        "throttled",
        "blocked",
        "rejected",
        "deferred",
        "quit",
    }
)


class EventLog:
    """Appends ``{"time", "provider", "event", "ip", ...}`` lines to ``path`` (``None``: discard).

    Lines are buffered and flushed shortly after they are written (within ``flush_interval``
    seconds, from the running event loop), so heavy benchmarks do not pay a syscall per event.
    """

    def __init__(self, path: str | Path | None, flush_interval: float = 0.1) -> None:
        self.path = Path(path) if path is not None else None
        self._file: IO[str] | None = (
            # open for the log's lifetime (closed by close())
            open(self.path, "a", encoding="utf-8") if self.path is not None else None  # noqa: SIM115
        )
        self._flush_interval = flush_interval
        self._flush_pending = False

    def write(self, provider: str, event: str, ip: str, **fields: Any) -> None:
        if self._file is None:
            return
        record = {"time": round(time.time(), 6), "provider": provider, "event": event, "ip": ip}
        record.update({k: v for k, v in fields.items() if v is not None})
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        if not self._flush_pending:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._file.flush()
                return
            self._flush_pending = True
            loop.call_later(self._flush_interval, self.flush)

    def flush(self) -> None:
        self._flush_pending = False
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()
            self._file.close()
            self._file = None
