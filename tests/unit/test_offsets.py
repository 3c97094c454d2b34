import random

import pytest

from consumer.offsets import PartitionOffsets

pytestmark = pytest.mark.unit


def test_nothing_to_commit_before_anything_is_seen():
    assert PartitionOffsets().committable() is None


def test_the_commit_never_passes_an_unfinished_offset():
    offsets = PartitionOffsets()
    for offset in (10, 11, 12, 13):
        offsets.started(offset)
    offsets.finished(11)
    offsets.finished(13)
    assert offsets.committable() == 10  # 10 is still running
    offsets.finished(10)
    assert offsets.committable() == 12  # 12 is still running
    offsets.finished(12)
    assert offsets.committable() == 14
    assert offsets.in_flight == 0


def test_committable_is_none_once_committed_until_it_moves():
    offsets = PartitionOffsets()
    offsets.started(0)
    offsets.finished(0)
    assert offsets.committable() == 1
    offsets.committed(1)
    assert offsets.committable() is None
    offsets.started(1)
    assert offsets.committable() is None  # 1 is in flight: still 1
    offsets.finished(1)
    assert offsets.committable() == 2


def test_offsets_must_start_in_order():
    offsets = PartitionOffsets()
    offsets.started(5)
    with pytest.raises(ValueError, match="started after"):
        offsets.started(5)


@pytest.mark.parametrize("seed", range(20))
def test_random_completion_orders_never_commit_past_unfinished_work(seed):
    rng = random.Random(seed)
    offsets = PartitionOffsets()
    started = list(range(100, 160))
    for offset in started:
        offsets.started(offset)
    unfinished = set(started)
    for offset in rng.sample(started, len(started)):
        offsets.finished(offset)
        unfinished.discard(offset)
        committable = offsets.committable()
        if committable is not None:
            assert all(o >= committable for o in unfinished)
            offsets.committed(committable)
    assert offsets.committable() is None
    assert offsets.in_flight == 0
