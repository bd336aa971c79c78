"""Where a process's memory goes: ``KMTA_TRACEMALLOC=DIR`` (read by ``kmta.cli.commands``)
writes, every ``KMTA_TRACEMALLOC_EVERY`` seconds (30), a text summary to
``DIR/<command>-<pid>.txt``: VmRSS; with ``KMTA_TRACEMALLOC_FRAMES`` > 0 (6) what Python holds
(``tracemalloc``: the traced total, the top sites by line and by file, the largest tracebacks);
with ``KMTA_TRACEMALLOC_TRIM=1`` VmRSS again after glibc's ``malloc_trim(0)``, which hands the
heap's free pages back: RSS that trimming gives back was freed memory the allocator kept, not
memory in use; with ``KMTA_TRACEMALLOC_OBJECTS=1`` the live objects the garbage collector
tracks, counted by type, and the largest containers (how many items, one item's repr): cheap
enough without ``tracemalloc`` (no frames), it names what accumulates as objects even when its
memory is not traced or is lost to fragmentation. A thread writes it, so a busy event loop
still gets its summaries. Only for benchmarks: tracing costs CPU and memory of its own."""
from __future__ import annotations

import ctypes
import gc
import os
import reprlib
import sys
import threading
import time
import tracemalloc
from pathlib import Path

__all__ = ["objects", "start", "summary"]


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


def objects(top: int = 15) -> str:
    """The objects the collector tracks by type (count), and the ``top`` largest containers
    by length, each with one of its items (text). Some containers are missed: an untracked
    one (a dict or tuple of atomic values) held by another untracked one."""
    counts: dict[str, int] = {}
    big: list[tuple[int, str, str]] = []
    tracked = gc.get_objects()
    # a dict of atomic values only (str -> float, int -> int) is not tracked: found through
    # the objects that hold it
    untracked = {id(r): r for o in tracked for r in gc.get_referents(o)
                 if type(r) is dict and len(r) >= 1000 and not gc.is_tracked(r)}
    for o in [*tracked, *untracked.values()]:
        name = type(o).__qualname__
        counts[name] = counts.get(name, 0) + 1
        try:  # the type's __len__, not the object's: a __getattr__ may make up attributes
            n = len(o) if hasattr(type(o), "__len__") and hasattr(type(o), "__iter__") else 0
        except Exception:  # noqa: BLE001 - a foreign __len__ may raise: not a container here
            n = 0
        if n >= 1000:
            try:
                item = next(iter(o.items() if isinstance(o, dict) else o))
            except Exception:  # noqa: BLE001 - an iterator that refuses: no sample
                item = "?"
            big.append((n, name, reprlib.repr(item)[:100]))
    out = [f"-- objects: {sum(counts.values())} tracked, {sys.getallocatedblocks()} "
           "pymalloc blocks"]
    out += [f"{n:10d} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])[:top]]
    out.append("-- largest containers")
    out += [f"{n:10d} {k} {item}" for n, k, item in sorted(big, reverse=True)[:top]]
    return "\n".join(out) + "\n"


def start(out_dir: str, name: str) -> None:
    """Trace from now on (unless frames is 0); a daemon thread appends a summary every
    interval."""
    every = float(os.environ.get("KMTA_TRACEMALLOC_EVERY", "30"))
    frames = int(os.environ.get("KMTA_TRACEMALLOC_FRAMES", "6"))
    trim = os.environ.get("KMTA_TRACEMALLOC_TRIM") == "1"
    count = os.environ.get("KMTA_TRACEMALLOC_OBJECTS") == "1"
    os.makedirs(out_dir, exist_ok=True)
    path = Path(out_dir) / f"{name}-{os.getpid()}.txt"
    if frames > 0:
        tracemalloc.start(frames)

    def loop() -> None:
        while True:
            time.sleep(every)
            snap = tracemalloc.take_snapshot() if frames > 0 else None
            text = summary(snap, trim=trim) + (objects() if count else "")
            with path.open("a") as f:
                f.write(text)

    threading.Thread(target=loop, name="memtrace", daemon=True).start()
    if os.environ.get("KMTA_TRACEMALLOC_TRIGGER") == "1":
        threading.Thread(target=_triggers, args=(Path(out_dir), path),
                         name="memtrace-trigger", daemon=True).start()


def _triggers(out_dir: Path, path: Path) -> None:
    """``KMTA_TRACEMALLOC_TRIGGER=1``: tracing started late, by hand. A file ``DIR/start``
    (its text: the frames, 8 if empty) starts tracemalloc; each ``DIR/snap`` takes a snapshot
    and writes, to ``<path>.diff``, what grew since the previous one, by traceback: what is
    allocated while a queue builds and stays; ``DIR/stop`` stops tracing (its traces' memory
    is freed, so a window traced in one phase does not raise a later phase's peak). Each
    trigger file is removed once acted on."""
    prev: tracemalloc.Snapshot | None = None
    diff = path.with_suffix(".diff")
    while True:
        time.sleep(1)
        prev = trigger_step(out_dir, diff, prev)


def trigger_step(out_dir: Path, diff: Path,
                 prev: tracemalloc.Snapshot | None) -> tracemalloc.Snapshot | None:
    """One look at the trigger files (``_triggers``); the snapshot to diff against next."""
    start, snap, stop = out_dir / "start", out_dir / "snap", out_dir / "stop"
    if start.exists():
        text = start.read_text().strip()
        start.unlink()
        if not tracemalloc.is_tracing():
            tracemalloc.start(int(text) if text else 8)
        prev = tracemalloc.take_snapshot()
    if snap.exists() and tracemalloc.is_tracing():
        snap.unlink()
        now = tracemalloc.take_snapshot()
        ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
        now = now.filter_traces(ignore)
        total = sum(s.size for s in now.statistics("filename"))
        out = [f"time {time.time():.0f} VmRSS {_rss_mb():.1f} MB traced "
               f"{total / 2**20:.1f} MB blocks {sys.getallocatedblocks()} tracemalloc's own "
               f"{tracemalloc.get_tracemalloc_memory() / 2**20:.1f} MB"]
        if prev is not None:
            base = prev.filter_traces(ignore)
            stats = now.compare_to(base, "traceback")
            for s in stats[:25]:
                out.append(f"{s.size_diff / 2**20:+9.2f} MB {s.count_diff:+9d} "
                           f"(now {s.size / 2**20:.2f} MB {s.count})")
                out += [f"      {f}" for f in s.traceback.format(most_recent_first=True)]
            out.append("-- by line")
            for s in now.compare_to(base, "lineno")[:25]:
                out.append(f"{s.size_diff / 2**20:+9.2f} MB {s.count_diff:+9d} "
                           f"{s.traceback[0]}")
        with diff.open("a") as f:
            f.write("\n".join(out) + "\n\n")
        prev = now
    if stop.exists():
        stop.unlink()
        tracemalloc.stop()
        prev = None
    return prev
