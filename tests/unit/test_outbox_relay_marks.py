"""A batch's mark is written while the next batch is read and sent, never at its expense.

Schedules fixed by hand: the source's ``mark_published`` waits until the test lets it
write, so each test decides exactly what the relay reads while a mark is in flight.
Invariants: a row whose mark is being written is not sent again; marks land in batch
order, one at a time; a mark that fails fails the next pass and its rows are published
again (at least once, as after a crash); ``run`` returns and ``stop`` releases the lease
only once the last mark is written.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from persistence.outbox import PendingOutboxRow
from producer.outbox_relay import OutboxRelay
from telemetry.metrics import Metrics

pytestmark = pytest.mark.unit


class HeldMarks:
    """An outbox whose marks are written only when the test releases them, in order."""

    def __init__(self, count: int) -> None:
        self.rows = [PendingOutboxRow(i, "payments.results", f"k{i}", b"v") for i in range(count)]
        self.marked: set[int] = set()
        self.mark_calls: list[list[int]] = []
        self.releases: list[asyncio.Event] = []
        self.failures: dict[int, Exception] = {}

    async def unpublished(self, limit: int) -> list[PendingOutboxRow]:
        return [r for r in self.rows if r.id not in self.marked][:limit]

    async def mark_published(self, ids: list[int]) -> None:
        call = len(self.mark_calls)
        self.mark_calls.append(list(ids))
        release = asyncio.Event()
        self.releases.append(release)
        await release.wait()
        if call in self.failures:
            raise self.failures[call]
        self.marked.update(ids)


class Acks:
    """A producer client that acknowledges every record at once."""

    def __init__(self) -> None:
        self.sent: Counter[int] = Counter()
        self.order: list[int] = []

    async def send(self, topic: str, payload: bytes, *, key: bytes) -> asyncio.Future[None]:
        number = int(key.decode()[1:])
        self.sent[number] += 1
        self.order.append(number)
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ack.set_result(None)
        return ack


class Producer:
    def __init__(self, client: Acks) -> None:
        self.client = client


class Lease:
    holder = "relay-1"

    def __init__(self) -> None:
        self.released = False

    async def acquire(self) -> bool:
        return True

    async def release(self) -> None:
        self.released = True


def _relay(rows: HeldMarks, acks: Acks, lease: Lease, batch_size: int) -> OutboxRelay:
    producer: Any = Producer(acks)
    return OutboxRelay(rows, producer, Metrics(CollectorRegistry()), lease, batch_size=batch_size)


async def _until(condition: Any) -> None:
    """Let the loop run until ``condition()`` holds (bounded: a hang guard, not a timing)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the relay never got there")


async def test_the_next_batch_is_sent_while_the_previous_mark_is_still_being_written() -> None:
    rows, acks, lease = HeldMarks(6), Acks(), Lease()
    relay = _relay(rows, acks, lease, batch_size=3)

    assert await relay.publish_once() == 3
    await _until(lambda: len(rows.mark_calls) == 1)
    assert rows.marked == set(), "the first mark is still being written"

    # The second pass reads while rows 0-2 are unmarked in the store: it must leave them out.
    second = asyncio.create_task(relay.publish_once())
    await _until(lambda: len(acks.order) == 6)
    assert acks.order == [0, 1, 2, 3, 4, 5]
    assert not second.done(), "its own mark waits for the first: one mark at a time"
    rows.releases[0].set()
    assert await second == 3
    assert rows.mark_calls == [[0, 1, 2], [3, 4, 5]]

    rows.releases[1].set()
    await relay.settled()
    assert rows.marked == set(range(6))
    assert await relay.publish_once() == 0
    assert acks.sent == Counter(dict.fromkeys(range(6), 1))


async def test_a_row_marked_after_the_read_began_is_still_left_out() -> None:
    """The snapshot a read returns may predate the mark: the ids are copied before it."""
    rows, acks, lease = HeldMarks(4), Acks(), Lease()
    relay = _relay(rows, acks, lease, batch_size=2)
    assert await relay.publish_once() == 2
    await _until(lambda: len(rows.mark_calls) == 1)

    real_read = rows.unpublished

    async def read_then_mark_lands(limit: int) -> list[PendingOutboxRow]:
        snapshot = await real_read(limit)  # rows 0-3, all unmarked
        rows.releases[0].set()  # the first mark lands before the read's answer is used
        await _until(lambda: not relay._marking)
        return snapshot

    rows.unpublished = read_then_mark_lands  # type: ignore[method-assign]
    second = asyncio.create_task(relay.publish_once())
    await _until(lambda: len(rows.mark_calls) == 2)
    assert await second == 2
    rows.releases[1].set()
    await relay.settled()
    assert acks.sent == Counter(dict.fromkeys(range(4), 1))


async def test_a_failed_mark_fails_the_next_pass_and_its_rows_are_published_again() -> None:
    rows, acks, lease = HeldMarks(4), Acks(), Lease()
    rows.failures[0] = RuntimeError("database went away")
    relay = _relay(rows, acks, lease, batch_size=2)

    assert await relay.publish_once() == 2
    await _until(lambda: len(rows.mark_calls) == 1)
    rows.releases[0].set()
    with pytest.raises(RuntimeError, match="database went away"):
        await relay.publish_once()  # sends rows 2-3, then learns the first mark failed

    # Nothing is marked, so the next passes publish every row again, oldest first.
    assert await relay.publish_once() == 2
    await _until(lambda: len(rows.mark_calls) == 2)
    fourth = asyncio.create_task(relay.publish_once())
    await _until(lambda: len(acks.order) == 8)
    rows.releases[1].set()
    assert await fourth == 2
    await _until(lambda: len(rows.mark_calls) == 3)
    rows.releases[2].set()
    await relay.settled()
    assert rows.marked == set(range(4))
    assert acks.order == [0, 1, 2, 3, 0, 1, 2, 3]


async def test_stop_writes_the_last_mark_before_it_releases_the_lease() -> None:
    rows, acks, lease = HeldMarks(2), Acks(), Lease()
    relay = _relay(rows, acks, lease, batch_size=5)
    assert await relay.publish_once() == 2
    stopping = asyncio.create_task(relay.stop())
    await _until(lambda: len(rows.mark_calls) == 1)
    for _ in range(10):
        await asyncio.sleep(0)
    assert not lease.released, "the next holder would read the rows as unpublished"
    rows.releases[0].set()
    await stopping
    assert lease.released
    assert rows.marked == {0, 1}
    assert acks.sent == Counter({0: 1, 1: 1})


async def test_run_told_to_finish_returns_only_once_its_last_mark_is_written() -> None:
    rows, acks, lease = HeldMarks(3), Acks(), Lease()
    relay = _relay(rows, acks, lease, batch_size=5)
    run = asyncio.create_task(relay.run())
    await _until(lambda: len(rows.mark_calls) == 1)
    relay.finish()
    for _ in range(10):
        await asyncio.sleep(0)
    assert not run.done()
    rows.releases[0].set()
    await asyncio.wait_for(run, 5)
    assert rows.marked == {0, 1, 2}
