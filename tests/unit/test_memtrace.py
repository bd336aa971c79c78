"""ops/memtrace.py's object census: what accumulates shows by type and as a large container."""
from __future__ import annotations

import gc

from ops.memtrace import objects


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
