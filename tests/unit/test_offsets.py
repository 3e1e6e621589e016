"""Per-partition completion tracking -> committable offsets."""

from __future__ import annotations

import random

import pytest

from connector.offsets import OffsetOrderError, PartitionOffsets


def tracked(*offsets: int) -> PartitionOffsets:
    state = PartitionOffsets("transcripts", 0)
    for offset in offsets:
        state.track(offset)
    return state


def test_nothing_is_committable_before_a_record_finishes() -> None:
    state = tracked(10, 11)
    assert state.committable is None
    assert not state.needs_commit()
    assert state.unfinished == 2
    assert state.holding == 2
    assert state.oldest_unfinished == 10


def test_in_order_completion_moves_one_by_one() -> None:
    state = tracked(0, 1, 2)
    assert state.finish(0) is True
    assert state.committable == 1
    assert state.finish(1) is True
    assert state.committable == 2
    assert state.finish(2) is True
    assert state.committable == 3
    assert state.unfinished == 0
    assert state.oldest_unfinished is None


def test_out_of_order_completion() -> None:
    state = tracked(100, 101, 102, 103, 104)
    assert state.finish(102) is False
    assert state.committable is None
    assert state.finish(104) is False
    assert state.committable is None
    assert state.oldest_unfinished == 100
    assert state.finish(100) is True
    assert state.committable == 101  # 101 is still running
    assert state.oldest_unfinished == 101
    assert state.finish(101) is True
    assert state.committable == 103  # 102 was done already
    assert state.finish(103) is True
    assert state.committable == 105  # and so was 104
    assert state.unfinished == 0


def test_reverse_order_completion_checked_at_each_step() -> None:
    offsets = list(range(50, 60))
    state = tracked(*offsets)
    for offset in reversed(offsets[1:]):
        assert state.finish(offset) is False
        assert state.committable is None, f"after finishing {offset}"
        assert not state.needs_commit()
        assert state.oldest_unfinished == 50
        assert state.unfinished == len(offsets)  # the head still holds them all back
    assert state.finish(50) is True
    assert state.committable == 60
    assert state.unfinished == 0
    assert state.holding == 10  # all waiting for a commit


def test_gaps_in_offsets_are_fine() -> None:
    """Compacted topics and transaction markers leave gaps: the next offset is one past."""
    state = tracked(5, 9, 20)
    state.finish(9)
    state.finish(5)
    assert state.committable == 10
    state.finish(20)
    assert state.committable == 21


def test_random_completion_order_matches_a_model() -> None:
    rng = random.Random(7)
    offsets = sorted(rng.sample(range(1000), 200))
    state = tracked(*offsets)
    order = offsets[:]
    rng.shuffle(order)
    finished: set[int] = set()
    for offset in order:
        before = state.committable
        moved = state.finish(offset)
        finished.add(offset)
        unfinished = [o for o in offsets if o not in finished]
        done_prefix = [o for o in offsets if not unfinished or o < unfinished[0]]
        expected = done_prefix[-1] + 1 if done_prefix else None
        assert state.committable == expected
        assert moved == (state.committable != before)
        assert state.oldest_unfinished == (unfinished[0] if unfinished else None)


def test_order_violation_raises() -> None:
    state = tracked(5)
    with pytest.raises(OffsetOrderError):
        state.track(5)
    with pytest.raises(OffsetOrderError):
        state.track(3)
    state.track(6)  # still usable afterwards
    assert state.unfinished == 2


def test_first_offset_may_be_zero_but_not_negative() -> None:
    state = tracked(0)
    with pytest.raises(OffsetOrderError):
        state.track(-1)


def test_awaiting_commit_release_counts() -> None:
    state = tracked(0, 1, 2, 3, 4)
    state.finish(0)
    state.finish(1)
    assert state.committable == 2
    assert state.needs_commit()
    assert state.holding == 5  # 3 unfinished + 2 awaiting a commit

    state.commit_requested = 2
    assert not state.needs_commit()
    assert state.committed_to(2) == 2
    assert state.committed == 2
    assert state.holding == 3

    state.finish(3)  # out of order: nothing more is committable
    assert state.committable == 2
    assert state.committed_to(2) == 0  # a repeated confirmation releases nothing

    state.finish(2)
    assert state.committable == 4
    assert state.needs_commit()
    assert state.holding == 3  # 2 and 3 wait for a commit, 4 runs
    assert state.committed_to(3) == 1  # a commit of 3 covers only offset 2
    assert state.holding == 2
    assert state.committed_to(4) == 1
    assert state.holding == 1
    state.finish(4)
    assert state.committed_to(5) == 1
    assert state.holding == 0
    assert state.committed == 5


def test_an_older_commit_confirmation_does_not_move_committed_back() -> None:
    state = tracked(0, 1, 2)
    for offset in (0, 1, 2):
        state.finish(offset)
    assert state.committed_to(3) == 3
    assert state.committed_to(1) == 0
    assert state.committed == 3


def test_commit_of_unfinished_offsets_releases_only_finished_ones() -> None:
    state = tracked(0, 1, 2)
    state.finish(0)
    assert state.committed_to(3) == 1
    assert state.unfinished == 2
    assert state.holding == 2
