"""Offsets of one queue partition: the commit point, and the finished offsets past it that
travel in the commit's metadata so that the next owner skips them."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from senders.tracker import METADATA_MAX, OffsetTracker, decode_done, encode_done


def test_the_commit_point_waits_for_the_first_unfinished_offset() -> None:
    t = OffsetTracker()
    for off in range(10, 15):
        assert not t.add(off)
    t.done(12)
    t.done(14)
    assert t.committable is None
    t.done(10)
    assert t.committable == 11
    assert decode_done(11, t.metadata()) == {12, 14}
    t.done(11)
    assert t.committable == 13 and decode_done(13, t.metadata()) == {14}


def test_a_drained_partition_commits_past_the_markers_behind_its_last_record() -> None:
    """Records 10 and 11, then a commit marker at 12: the consumer's position is 13. The
    commit point moves there only once every offset read is finished."""
    t = OffsetTracker()
    t.add(10)
    t.add(11)
    t.done(10)
    assert not t.skip_to(13) and t.point == 11  # 11 is still being delivered
    t.done(11)
    assert t.point == 12
    assert t.skip_to(13) and t.point == 13
    assert not t.skip_to(13) and not t.skip_to(12)  # never back, nor twice
    t.add(14)
    assert not t.idle and not t.skip_to(20)


def test_a_new_owner_skips_what_the_last_one_finished() -> None:
    old = OffsetTracker()
    for off in range(100, 110):
        old.add(off)
    for off in (100, 103, 104, 105, 108):
        old.done(off)
    point, meta = old.committable, old.metadata()
    assert point == 101
    new = OffsetTracker(known_done=decode_done(point, meta))
    new.committable = new.committed = point
    skipped = [off for off in range(101, 110) if new.add(off)]
    assert skipped == [103, 104, 105, 108]
    # before reading the rest, the new owner's own metadata still names them
    half = OffsetTracker(known_done=decode_done(point, meta))
    half.committable = point
    half.add(101)
    assert decode_done(point, half.metadata()) == {103, 104, 105, 108}
    half.done(101)
    assert half.committable == 102


def test_metadata_is_cut_to_fit_the_broker_limit() -> None:
    done = set(range(0, 200_000, 2))  # no ranges: every other offset
    meta = encode_done(0, done)
    assert len(meta) <= METADATA_MAX
    got = decode_done(0, meta)
    assert got and got <= done and min(got) == 0  # the nearest ones kept


def test_foreign_or_broken_metadata_means_nothing_known() -> None:
    assert decode_done(5, "") == set()
    assert decode_done(5, "some other tool") == set()
    assert decode_done(5, "kmta-done:3-x") == set()
    assert decode_done(5, "kmta-done:9-3") == set()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**9), st.sets(st.integers(0, 5000), max_size=300))
def test_encode_decode_round_trip(point: int, rel: set[int]) -> None:
    done = {point + r for r in rel}
    assert decode_done(point, encode_done(point, done)) == done


def test_an_offset_is_claimed_once_and_only_when_read() -> None:
    t = OffsetTracker(known_done={3})
    assert not t.add(1) and t.add(3)
    assert [t.claim(1), t.claim(1), t.claim(2), t.claim(3)] == [True, False, False, False]
