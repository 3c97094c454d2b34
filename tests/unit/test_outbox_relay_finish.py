"""A relay told to finish ends between passes, so a graceful stop publishes each row once.

The schedule is fixed by hand: the broker's acknowledgement of a batch is held until the
relay has been told to stop. Cancelling the relay at that point (what the consumer service
did before) leaves the acknowledged rows unmarked, and the stop's drain publishes them a
second time; the test shows both.
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


class Rows:
    """An outbox of ``count`` rows; marked rows are no longer unpublished."""

    def __init__(self, count: int) -> None:
        self.rows = [PendingOutboxRow(i, "payments.results", f"k{i}", b"v") for i in range(count)]
        self.marked: set[int] = set()

    async def unpublished(self, limit: int) -> list[PendingOutboxRow]:
        return [r for r in self.rows if r.id not in self.marked][:limit]

    async def mark_published(self, ids: list[int]) -> None:
        self.marked.update(ids)


class HeldAcks:
    """A producer client whose first batch is acknowledged only when ``release`` is set."""

    def __init__(self) -> None:
        self.sent: Counter[int] = Counter()
        self.first_send = asyncio.Event()
        self.release = asyncio.Event()

    async def send(self, topic: str, payload: bytes, *, key: bytes) -> asyncio.Future[None]:
        self.sent[int(key.decode()[1:])] += 1
        self.first_send.set()
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def acknowledge() -> None:
            await self.release.wait()
            ack.set_result(None)

        asyncio.get_running_loop().create_task(acknowledge())
        return ack


class Producer:
    def __init__(self, client: HeldAcks) -> None:
        self.client = client


class HeldLease:
    holder = "relay-1"

    async def acquire(self) -> bool:
        return True

    async def release(self) -> None:
        return None


def _relay(rows: Rows, acks: HeldAcks) -> OutboxRelay:
    producer: Any = Producer(acks)
    return OutboxRelay(rows, producer, Metrics(CollectorRegistry()), HeldLease())


async def test_a_relay_told_to_finish_ends_its_pass_and_publishes_each_row_once() -> None:
    rows, acks = Rows(3), HeldAcks()
    relay = _relay(rows, acks)
    run = asyncio.create_task(relay.run())
    await acks.first_send.wait()

    relay.finish()  # while the batch waits for its acknowledgement
    acks.release.set()
    await asyncio.wait_for(run, 5)
    await relay.stop()

    assert rows.marked == {0, 1, 2}
    assert acks.sent == Counter({0: 1, 1: 1, 2: 1})
    assert not await relay.is_ready()


async def test_a_relay_cancelled_between_acknowledgement_and_mark_publishes_again() -> None:
    """Why finish() exists: the old stop, for contrast (a crash still does this)."""
    rows, acks = Rows(3), HeldAcks()
    relay = _relay(rows, acks)
    run = asyncio.create_task(relay.run())
    await acks.first_send.wait()

    acks.release.set()
    await asyncio.sleep(0)  # the acknowledgements arrive; the relay has not yet resumed
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await relay.stop()

    assert rows.marked == {0, 1, 2}
    assert acks.sent == Counter({0: 2, 1: 2, 2: 2})


class Lease:
    holder = "relay-1"

    def __init__(self, held: bool) -> None:
        self.held = held

    async def acquire(self) -> bool:
        return self.held

    async def release(self) -> None:
        return None


@pytest.mark.parametrize("held", [True, False], ids=["idle-holder", "standby"])
async def test_a_finishing_relay_returns_without_waiting_out_its_poll(held: bool) -> None:
    rows, acks = Rows(0), HeldAcks()
    producer: Any = Producer(acks)
    hour = 3600.0
    relay = OutboxRelay(
        rows,
        producer,
        Metrics(CollectorRegistry()),
        Lease(held),
        idle_poll_s=hour,
        renew_interval_s=hour,
        stall_after_s=2 * hour,
    )
    run = asyncio.create_task(relay.run())
    await asyncio.sleep(0.01)  # one pass, then its wait of an hour
    relay.finish()
    await asyncio.wait_for(run, 5)
    assert relay.holding is held
    assert not acks.sent
