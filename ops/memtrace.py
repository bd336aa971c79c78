"""Where a process's memory goes: ``KMTA_TRACEMALLOC=DIR`` (read by ``kmta.cli.commands``)
writes, every ``KMTA_TRACEMALLOC_EVERY`` seconds (30), a text summary to
``DIR/<command>-<pid>.txt``: VmRSS; with ``KMTA_TRACEMALLOC_FRAMES`` > 0 (6) what Python holds
(``tracemalloc``: the traced total, the top sites by line and by file, the largest tracebacks);
with ``KMTA_TRACEMALLOC_TRIM=1`` VmRSS again after glibc's ``malloc_trim(0)``, which hands the
heap's free pages back: RSS that trimming gives back was freed memory the allocator kept, not
memory in use. A thread writes it, so a busy event loop still gets its summaries. Only for
benchmarks: tracing costs CPU and memory of its own."""
from __future__ import annotations

import ctypes
import os
import threading
import time
import tracemalloc
from pathlib import Path

__all__ = ["start", "summary"]


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def summary(snapshot: tracemalloc.Snapshot | None, top: int = 25, trim: bool = False) -> str:
    """The summary of one snapshot (text); without one, RSS alone."""
    head = f"time {time.time():.0f} VmRSS {_rss_mb():.1f} MB"
    if trim:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        head += f" after malloc_trim {_rss_mb():.1f} MB"
    if snapshot is None:
        return head + "\n"
    snap = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    total = sum(s.size for s in snap.statistics("filename"))
    out = [f"{head} traced {total / 2**20:.1f} MB", "-- by file"]
    out += [f"{s.size / 2**20:9.2f} MB {s.count:9d} {s.traceback[0].filename}"
            for s in snap.statistics("filename")[:top]]
    out.append("-- by line")
    out += [f"{s.size / 2**20:9.2f} MB {s.count:9d} {s.traceback[0]}"
            for s in snap.statistics("lineno")[:top]]
    out.append("-- by traceback")
    for s in snap.statistics("traceback")[:10]:
        out.append(f"{s.size / 2**20:9.2f} MB {s.count:9d}")
        out += [f"      {f}" for f in s.traceback.format(most_recent_first=True)]
    return "\n".join(out) + "\n\n"


def start(out_dir: str, name: str) -> None:
    """Trace from now on (unless frames is 0); a daemon thread appends a summary every
    interval."""
    every = float(os.environ.get("KMTA_TRACEMALLOC_EVERY", "30"))
    frames = int(os.environ.get("KMTA_TRACEMALLOC_FRAMES", "6"))
    trim = os.environ.get("KMTA_TRACEMALLOC_TRIM") == "1"
    os.makedirs(out_dir, exist_ok=True)
    path = Path(out_dir) / f"{name}-{os.getpid()}.txt"
    if frames > 0:
        tracemalloc.start(frames)

    def loop() -> None:
        while True:
            time.sleep(every)
            snap = tracemalloc.take_snapshot() if frames > 0 else None
            text = summary(snap, trim=trim)
            with path.open("a") as f:
                f.write(text)

    threading.Thread(target=loop, name="memtrace", daemon=True).start()
