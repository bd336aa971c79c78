"""``SeenIds`` with a file: the ids beyond the last ``hot`` leave memory and answer the same."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmta.pipeline.seenids import SeenIds
from kmta.policy.dedup import Seen

_OPS = st.lists(st.tuples(st.sampled_from("sspgc"), st.integers(0, 40), st.integers(0, 3000)),
                max_size=300)


@settings(max_examples=60, deadline=None)
@given(ops=_OPS, hot=st.integers(1, 12), merge_at=st.integers(1, 5))
def test_answers_as_a_dict_does_with_most_ids_in_the_file(tmp_path_factory: pytest.TempPathFactory,
                                                           ops: list[tuple[str, int, int]],
                                                           hot: int, merge_at: int) -> None:
    path = str(tmp_path_factory.mktemp("ids") / "seen.sqlite")
    ours = SeenIds(merge_at=merge_at, path=path, hot=hot)
    model: dict[str, Seen] = {}
    try:
        for step, (op, n, x) in enumerate(ops):
            k = f"id-{n}"
            if op == "s":
                s = Seen(float(x), x % 65536, step)
                ours[k] = s
                model[k] = s
            elif op == "p":
                assert ours.pop(k, None) == model.pop(k, None)
            elif op == "g":
                cut = float(x)
                gone = [i for i, s in model.items() if s.at <= cut]
                assert ours.prune(cut) == len(gone)
                for i in gone:
                    del model[i]
            else:
                ours.spill()
            assert ours.get(k) == model.get(k)
            assert (k in ours) == (k in model)
        assert all(ours.get(f"id-{n}") == model.get(f"id-{n}") for n in range(41))
        assert len(ours) == len(model)
    finally:
        ours.close()


def test_memory_holds_at_most_the_hot_ids(tmp_path: Path) -> None:
    ids = SeenIds(merge_at=64, path=str(tmp_path / "seen.sqlite"), hot=1000)
    rng = random.Random(1)
    for i in range(20_000):
        ids[f"m-{i}"] = Seen(1.8e9 + i, i % 64, i)
        assert len(ids._h) + len(ids._new) <= 1000 + 64
    assert all(ids.get(f"m-{i}") == Seen(1.8e9 + i, i % 64, i)
               for i in rng.sample(range(20_000), 500))
    assert ids.get("m-20000") is None
    assert len(ids) == 20_000
    assert ids.prune(1.8e9 + 9_999) == 10_000
    assert ids.get("m-9999") is None and ids.get("m-10000") == Seen(1.8e9 + 10_000, 16, 10_000)
    ids.close()


def test_the_file_is_made_afresh(tmp_path: Path) -> None:
    path = str(tmp_path / "seen.sqlite")
    Path(path).write_bytes(b"not a database: what a crash left")
    first = SeenIds(path=path, hot=1)
    first["a"] = Seen(1.0, 0, 1)
    first["b"] = Seen(1.0, 0, 2)  # spilled
    first.close()
    again = SeenIds(path=path, hot=1)  # the view reads the ids topic again at start
    assert again.get("a") is None and len(again) == 0
    again.close()
    assert os.path.exists(path)
