"""The pacer: slots 1/rate apart, and the shared grid of nodes pacing one source IP (their
slots interleave, a raise moves every node to the new grid at one instant)."""

from __future__ import annotations

import itertools

import pytest

from senders.pacing import Pacer, grid_slot


class Clock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def slots(pacers: list[Pacer], clock: Clock, until: float, step: float = 0.001) -> list:
    out = []
    while clock.t < until:
        for i, p in enumerate(pacers):
            if p.delay() <= 0:
                p.take()
                out.append((round(clock.t, 3), i))
        clock.t += step
    return out


def test_grid_slot_is_the_next_owned_point() -> None:
    # shared rate 1 msg/s over k=2 slots: points every 0.5 s; slot 1 owns the odd ones
    assert grid_slot(0.1, 1.0, frozenset({1}), 2) == pytest.approx(0.5)
    assert grid_slot(0.6, 1.0, frozenset({1}), 2) == pytest.approx(1.5)
    assert grid_slot(0.6, 1.0, frozenset({0}), 2) == pytest.approx(1.0)


def test_two_nodes_interleave_instead_of_meeting() -> None:
    clock = Clock()
    nodes = [Pacer(0.5, clock, grid=(frozenset({i}), 2)) for i in range(2)]
    out = slots(nodes, clock, 6.0)
    times = [t for t, _ in out]
    who = [i for _, i in out]
    assert len(out) >= 5 and all(a != b for a, b in itertools.pairwise(who))  # they alternate
    assert min(b - a for a, b in itertools.pairwise(times)) == pytest.approx(1.0, abs=0.002)


def test_a_raise_applies_at_one_instant_and_the_new_grid_starts_an_interval_later() -> None:
    clock = Clock()
    nodes = [Pacer(0.5, clock, grid=(frozenset({i}), 2)) for i in range(2)]
    for p in nodes:
        p.grid_rate = 0.5
    slots(nodes, clock, 3.2)
    # node 0 hears of the raise at 3.2, node 1 at 3.6; both apply it at 4.0
    nodes[0].set_rate(2.0, raise_at=4.0, grid_rate=2.0)
    out = slots(nodes, clock, 3.6)
    nodes[1].set_rate(2.0, raise_at=4.0, grid_rate=2.0)
    out += slots(nodes, clock, 7.0)
    times = sorted(t for t, _ in out)
    # the old grid's point at 4.0 (taken a step late), then the new grid: 4.0 + 1/4 s ...
    assert all(t <= 4.0 + 0.002 or t >= 4.25 - 0.002 for t in times)
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.25 - 0.002  # ... never closer
    assert len([t for t in times if 5.0 <= t < 7.0]) == 8  # 2 msg/s for the IP, shared


def rate_change(before: float, after: float, at: float) -> list[float]:
    """The slots (from 2 s) of four nodes sharing a source IP's grid, the IP's rate ``before``
    and then ``after`` from ``at`` (each node told at ``at``), to 10 s after the change."""
    clock = Clock()
    nodes = [Pacer(before / 4, clock, grid=(frozenset({i}), 4)) for i in range(4)]
    for p in nodes:
        p.grid_rate = before / 4
    out = slots(nodes, clock, at - 0.2)
    for p in nodes:
        p.set_rate(after / 4, raise_at=at, grid_rate=after / 4)
    out += slots(nodes, clock, at + 10.0)
    return sorted(t for t, _ in out if t >= 2.0)


@pytest.mark.parametrize("at", [10.0, 10.1, 10.2, 10.3, 10.45])
@pytest.mark.parametrize(("before", "after"), [(1.892, 1.948), (1.0, 1.25)])
def test_a_raise_continues_the_grid_without_a_gap(before, after, at) -> None:
    # four nodes share a source IP (the IP's rate: ``before``, then ``after`` from ``at``): the
    # IP's messages stay one interval apart across the raise, at the old interval or the new.
    # A new grid that started at the change itself, owned from slot 1 whatever slot the old
    # grid was at, left a gap of up to a round of the nodes (2 msg/s: up to 1.03 s instead of
    # 0.53), about a message lost per change
    times = rate_change(before, after, at)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 1 / max(before, after) - 0.002
    assert max(gaps) <= 1 / min(before, after) + 0.002
    assert len([t for t in times if at <= t < at + 10.0]) == pytest.approx(10 * after, abs=1)


@pytest.mark.parametrize("at", [10.0, 10.2, 10.45])
@pytest.mark.parametrize(("before", "after"), [(1.948, 1.892), (2.0, 1.0)])
def test_a_cut_puts_no_point_next_to_an_old_one(before, after, at) -> None:
    times = rate_change(before, after, at)
    assert min(b - a for a, b in itertools.pairwise(times)) >= 1 / before - 0.002


def test_a_node_started_later_falls_in_line_at_the_next_cut() -> None:
    # node 1 restarted: its grid began at its own start (1.3 s), off the others' (their grid
    # went on from earlier changes), so its points fall next to theirs; a cut starts the grid at
    # the change itself on every node, and from then on they interleave again
    clock = Clock()
    nodes = [Pacer(0.5, clock, grid=(frozenset({i}), 2)) for i in range(2)]
    for p in nodes:
        p.grid_rate = 0.5
    slots(nodes[:1], clock, 1.3)
    nodes[1] = Pacer(0.5, clock, grid=(frozenset({1}), 2))
    nodes[1].grid_rate, nodes[1].anchor = 0.5, 1.3
    before = slots(nodes, clock, 6.0)
    for p in nodes:
        p.set_rate(0.4, raise_at=6.5, grid_rate=0.4)
    after = slots(nodes, clock, 20.0)
    gap = [b - a for (a, _), (b, _) in itertools.pairwise(sorted(before)) if a >= 2.0]
    assert min(gap) < 0.5  # off the grid: 0.3 s after node 0's points
    times = sorted(t for t, _ in after if t >= 6.6)
    assert [round(b - a, 2) for a, b in itertools.pairwise(times)] == [1.25] * (len(times) - 1)


def test_a_change_heard_late_puts_the_node_on_the_others_grid() -> None:
    # node 1 hears of the change only after its instant: it still goes on from the grid the
    # others moved to at that instant (before, it kept its old origin at the new rate)
    clock = Clock()
    nodes = [Pacer(0.5, clock, grid=(frozenset({i}), 2)) for i in range(2)]
    for p in nodes:
        p.grid_rate = 0.5
    out = slots(nodes, clock, 3.5)
    nodes[0].set_rate(0.8, raise_at=3.7, grid_rate=0.8)
    out += slots(nodes, clock, 3.9)
    nodes[1].set_rate(0.8, raise_at=3.7, grid_rate=0.8)
    out += slots(nodes, clock, 20.0)
    times = sorted(t for t, _ in out if t >= 4.0)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) == pytest.approx(1 / 1.6, abs=0.002)
    assert max(gaps) == pytest.approx(1 / 1.6, abs=0.002)


def test_a_local_slow_down_skips_grid_points_and_applies_at_once() -> None:
    clock = Clock()
    p = Pacer(1.0, clock, grid=(frozenset({0}), 2))
    p.grid_rate = 1.0
    slots([p], clock, 4.0)
    p.set_rate(0.3, raise_at=None, grid_rate=1.0)
    out = slots([p], clock, 14.0)
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(out)]
    # points of the shared 2 msg/s grid (0.5 s apart), at least 1/0.3 s apart
    assert all(g >= 1 / 0.3 * 0.75 - 0.002 for g in gaps)
    assert all(abs(t * 2 - round(t * 2)) < 0.01 for t, _ in out)


def test_a_node_owning_several_slots_sends_at_its_whole_rate() -> None:
    # two nodes share a source IP at 4 msg/s over k=4 slots: node 0 owns slots 0 and 1 (two
    # adjacent points, then a gap), node 1 owns 2 and 3; spacing node 0's slots by its own
    # interval (0.5 s) skipped one point of each pair and halved its rate
    clock = Clock()
    nodes = [Pacer(2.0, clock, grid=(frozenset({2 * i, 2 * i + 1}), 4)) for i in range(2)]
    for p in nodes:
        p.grid_rate = 2.0
    out = slots(nodes, clock, 10.0)
    for i in range(2):
        assert len([t for t, who in out if who == i and t >= 2.0]) == pytest.approx(16, abs=1)
    times = sorted(t for t, _ in out)
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.25 - 0.002


@pytest.mark.parametrize("grid", [None, (frozenset({0, 1}), 2)])
def test_after_idling_the_second_slot_is_a_whole_interval_after_the_first(grid) -> None:
    # a provider whose bucket is one message deep refuses a message sent less than one of its
    # intervals after the last: a first slot backdated a quarter interval (at the start, after
    # a restart, after idling) put the second 3/4 of an interval after it
    clock = Clock(100.0)
    p = Pacer(2.73, clock, grid=grid)
    p.grid_rate = 2.73 if grid else None
    for _ in range(2):  # the start, then again after idling for 10 s
        first = clock.t
        out = [t for t, _ in slots([p], clock, first + 2.0)]
        gaps = [b - a for a, b in itertools.pairwise(out)]
        assert first - Pacer.LATE_MAX <= out[0] < first + 1 / 2.73  # (the grid's next point)
        assert min(gaps) >= 1 / 2.73 - Pacer.LATE_MAX - 0.002
        assert len(out) == pytest.approx(2.0 * 2.73, abs=1)
        clock.t += 10.0


def test_a_slot_taken_late_is_counted_back_by_at_most_late_max() -> None:
    clock = Clock(0.0)
    p = Pacer(1.0, clock)
    p.take()  # idle before: counted from LATE_MAX earlier
    clock.t = 1.0 - Pacer.LATE_MAX + 0.004  # the next was due 4 ms ago: counted from then
    assert p.delay() == 0
    p.take()
    clock.t = 2.0 - Pacer.LATE_MAX - 0.001  # due at 1.99: a whole interval after it
    assert p.delay() == pytest.approx(0.001)
    clock.t = 2.5  # due 0.5 s ago: counted back 10 ms, not a quarter interval (0.25 s)
    p.take()
    assert p.delay() == pytest.approx(1.0 - Pacer.LATE_MAX)
