"""ops/memtrace.py's object census: what accumulates shows by type and as a large container;
its late tracing, started, diffed and stopped by trigger files."""
from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

from ops.memtrace import objects, trigger_step


class _Holder:
    pass


def test_counts_objects_by_type_and_names_the_largest_containers() -> None:
    holder = _Holder()
    holder.pending = [_Holder() for _ in range(3000)]
    holder.times = {f"id-{i}": float(i) for i in range(2000)}  # atomic values: not tracked
    assert not gc.is_tracked(holder.times)
    text = objects(top=50)
    counts = {line.split()[1]: int(line.split()[0]) for line in
              text.split("-- largest containers")[0].splitlines()[1:]}
    assert counts.get("_Holder", 0) >= 3001
    big = text.split("-- largest containers")[1]
    assert any(line.split()[:2] == ["3000", "list"] for line in big.splitlines())
    assert any(line.split()[:2] == ["2000", "dict"] and "'id-0'" in line
               for line in big.splitlines())


def test_trigger_files_start_diff_and_stop_tracing(tmp_path: Path) -> None:
    assert not tracemalloc.is_tracing()
    diff = tmp_path / "worker-1.diff"
    (tmp_path / "start").write_text("1")
    try:
        prev = trigger_step(tmp_path, diff, None)
        assert tracemalloc.is_tracing() and prev is not None
        assert not (tmp_path / "start").exists()
        kept = [bytearray(1000) for _ in range(2000)]  # ~2 MB that stays across the window
        (tmp_path / "snap").write_text("")
        prev = trigger_step(tmp_path, diff, prev)
        text = diff.read_text()
        assert "tracemalloc's own" in text
        first = text.split("\n")[1]  # the largest growth, by traceback
        assert first.split()[0].startswith("+") and float(first.split()[0]) >= 1.9
        assert "test_memtrace.py" in text.split("\n")[2]
        (tmp_path / "stop").write_text("")
        assert trigger_step(tmp_path, diff, prev) is None
        assert not tracemalloc.is_tracing() and not (tmp_path / "stop").exists()
        del kept
    finally:
        tracemalloc.stop()
