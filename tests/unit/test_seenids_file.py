"""``SeenIds`` with a file: the ids beyond the last ``hot`` leave memory and answer the same."""
from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from kmta.pipeline.seenids import SeenIds
from kmta.policy.dedup import Seen

_OPS = st.lists(st.tuples(st.sampled_from("sspgc"), st.integers(0, 40), st.integers(0, 3000)),
                max_size=300)


@settings(max_examples=60, deadline=None)
@given(ops=_OPS, hot=st.integers(1, 12), merge_at=st.integers(1, 5), chunk=st.integers(1, 9))
def test_answers_as_a_dict_does_with_most_ids_in_the_file(tmp_path_factory: pytest.TempPathFactory,
                                                           ops: list[tuple[str, int, int]],
                                                           hot: int, merge_at: int,
                                                           chunk: int) -> None:
    path = str(tmp_path_factory.mktemp("ids") / "seen.sqlite")
    ours = SeenIds(merge_at=merge_at, path=path, hot=hot, chunk=chunk)
    model: dict[str, Seen] = {}
    forgotten = 0
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
                ours.prune(cut)  # at once for lookups, in the file later
                forgotten += len(gone)
                for i in gone:
                    del model[i]
            else:
                ours.spill()
            assert ours.get(k) == model.get(k)
            assert (k in ours) == (k in model)
        assert all(ours.get(f"id-{n}") == model.get(f"id-{n}") for n in range(41))
        assert len(ours) == len(model)  # the file's work all done
        assert ours.forgotten == forgotten
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
    ids.prune(1.8e9 + 9_999)
    assert ids.get("m-9999") is None and ids.forgotten == 0  # at once for lookups only
    ids.flush()
    assert ids.forgotten == 10_000
    assert ids.get("m-9999") is None and ids.get("m-10000") == Seen(1.8e9 + 10_000, 16, 10_000)
    ids.close()


def test_the_file_work_keeps_up_with_the_ids(tmp_path: Path) -> None:
    """Four rows of file work a set, a chunk (16 rows) every call when behind: ids arriving
    behind a prune of 10,000 rows wait for the file up to two ``hot`` and one id per chunk of
    the delete (at four rows a set, the delete would take 2,500 sets: as many ids waiting)."""
    ids = SeenIds(merge_at=16, path=str(tmp_path / "seen.sqlite"), hot=256, chunk=16)
    for i in range(10_000):
        ids[f"k-{i}"] = Seen(float(i), 0, i)
    ids.prune(9_999.0)
    worst = 0
    for i in range(10_000, 13_000):
        ids[f"k-{i}"] = Seen(float(i), 0, i)
        worst = max(worst, ids._backlog)
    assert worst <= 2 * 256 + 16 + 10_000 // 16
    assert ids.get("k-9999") is None and ids.get("k-10000") == Seen(10_000.0, 0, 10_000)
    assert len(ids) == 3000 and ids.forgotten == 10_000


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


class WindowMachine(RuleBasedStateMachine):
    """The router's use over time against a dict of id -> Seen: ids added at the clock's time,
    looked up, removed, the clock moved, pruned by a window, spilled, the file's work done in
    small chunks between (``chunk`` 1-5, ``hot`` 2-9: segments and prunes overlap often), and
    a restart that reads the ids topic (the model's entries) into a fresh file."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="seenids-")
        self.path = os.path.join(self.dir, "seen.sqlite")
        self.now = 1.8e9
        self.model: dict[str, Seen] = {}
        self.offset = 0
        self.ours = SeenIds(merge_at=1, path=self.path, hot=2)

    @initialize(hot=st.integers(2, 9), merge_at=st.integers(1, 4), chunk=st.integers(1, 5))
    def sizes(self, hot: int, merge_at: int, chunk: int) -> None:
        self.ours.close()
        self.ours = SeenIds(merge_at=merge_at, path=self.path, hot=hot, chunk=chunk)
        self.sized = (merge_at, hot, chunk)

    @rule(n=st.integers(0, 30))
    def add(self, n: int) -> None:
        k = f"<{n}@kmta.example>"
        self.offset += 1
        s = Seen(self.now, n % 7, self.offset)
        self.ours[k] = s
        self.model[k] = s

    @rule(n=st.integers(0, 30))
    def seen(self, n: int) -> None:
        k = f"<{n}@kmta.example>"
        assert self.ours.get(k) == self.model.get(k)

    @rule(n=st.integers(0, 30))
    def pop(self, n: int) -> None:
        k = f"<{n}@kmta.example>"
        assert self.ours.pop(k, None) == self.model.pop(k, None)

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 3.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(window=st.sampled_from([0.0, 1.0, 2.0, 5.0]))
    def prune(self, window: float) -> None:
        cut = self.now - window
        self.ours.prune(cut)
        self.model = {k: s for k, s in self.model.items() if s.at > cut}

    @rule()
    def spill(self) -> None:
        self.ours.spill()

    @rule()
    def flush(self) -> None:
        self.ours.flush()

    @rule()
    def restart(self) -> None:
        """The file made afresh and the ids topic read again (here: the model's entries, in
        the order they were accepted)."""
        self.ours.close()
        merge_at, hot, chunk = getattr(self, "sized", (1, 2, 1))
        self.ours = SeenIds(merge_at=merge_at, path=self.path, hot=hot, chunk=chunk)
        for k, s in sorted(self.model.items(), key=lambda kv: kv[1].offset):
            self.ours[k] = s

    @invariant()
    def memory_is_bounded(self) -> None:
        ours = self.ours
        assert len(ours._h) + len(ours._new) <= ours._hot + ours._merge_at

    def teardown(self) -> None:
        try:
            assert all(self.ours.get(f"<{n}@kmta.example>") == self.model.get(f"<{n}@kmta.example>")
                       for n in range(31))
            assert len(self.ours) == len(self.model)
        finally:
            self.ours.close()
            shutil.rmtree(self.dir, ignore_errors=True)


TestWindowMachine = WindowMachine.TestCase
TestWindowMachine.settings = settings(max_examples=80, stateful_step_count=60, deadline=None)
