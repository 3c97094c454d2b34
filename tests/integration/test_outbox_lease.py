"""One outbox relay publishes at a time: the lease on SQLite and PostgreSQL, with real Kafka.

Each relay gets a store, a writer queue, a producer and a lease of its own, as in separate
consumer processes. Expiry is driven by a hand-moved clock, never by waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paygate.kafka_security import kafka_client_options
from paygate.settings import Settings
from persistence.database import Database
from persistence.group_commit import GroupCommit
from persistence.outbox import OutboxMessage, enqueue_outbox
from persistence.outbox_lease import OutboxLease
from persistence.outbox_lease_tables import outbox_lease
from persistence.tables import outbox
from producer.kafka_producer import KafkaProducer
from producer.outbox_relay import OutboxRelay
from telemetry.metrics import Metrics
from tests.support.clock import Clock

pytestmark = pytest.mark.integration

LEASE = timedelta(seconds=10)
ORDERS = [f"order-{n}" for n in range(5)]


@dataclass
class Relay:
    relay: OutboxRelay
    lease: OutboxLease
    producer: KafkaProducer


@pytest.fixture
async def relays(
    engine: AsyncEngine, topics: Settings
) -> AsyncIterator[Callable[..., Awaitable[Relay]]]:
    """Makes relays over ``engine`` (each as if in a process of its own); stops them after."""
    made: list[Relay] = []

    async def make(clock: Clock, batch_size: int = 500) -> Relay:
        db = Database(engine, clock=clock)
        lease = OutboxLease(db.writes, duration=LEASE, clock=clock)
        producer = KafkaProducer(kafka_client_options(topics), client_id="paygate-lease-test")
        await producer.start()
        relay = OutboxRelay(
            db.outbox, producer, Metrics(), lease, batch_size=batch_size, renew_interval_s=0.05
        )
        made.append(Relay(relay, lease, producer))
        return made[-1]

    yield make
    for item in made:
        await item.producer.stop()


async def enqueue(engine: AsyncEngine, topic: str, count: int, start: int = 0) -> None:
    """``count`` events, spread over a few orders; the payload is the event's sequence number."""
    writes = GroupCommit(engine)
    clock = Clock()
    for n in range(start, start + count):
        message = OutboxMessage(f"evt-{n}", topic, ORDERS[n % len(ORDERS)], str(n).encode())

        async def insert(conn: AsyncConnection, message: OutboxMessage = message) -> None:
            await enqueue_outbox(conn, message, clock())

        await writes.run(insert)


async def unpublished_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        query = select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
        return int((await conn.execute(query)).scalar_one())


async def all_published(engine: AsyncEngine, attempts: int = 600) -> None:
    """Wait, with a bounded number of polls (a hang guard), until no row is unpublished."""
    for _ in range(attempts):
        if await unpublished_count(engine) == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{await unpublished_count(engine)} rows still unpublished")


async def read_all(settings: Settings) -> list[ConsumerRecord]:
    """Every record the results topic holds now (call after the producers stopped)."""
    topic = settings.results_topic
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.require_kafka())
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord] = []
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                for batch in (await consumer.getmany(tp, timeout_ms=200)).values():
                    records.extend(batch)
        return records
    finally:
        await consumer.stop()


def assert_each_once_in_order(records: list[ConsumerRecord], count: int) -> None:
    sequence = [int(r.value) for r in records]
    assert sorted(sequence) == list(range(count)), "each row published exactly once"
    by_order: dict[bytes, list[int]] = defaultdict(list)
    for record in records:
        by_order[record.key].append(int(record.value))
    for numbers in by_order.values():
        assert numbers == sorted(numbers), "one order's events in the order of their rows"


async def test_two_running_relays_publish_every_row_exactly_once_and_in_order(
    engine: AsyncEngine, topics: Settings, relays
) -> None:
    clock = Clock()
    first, second = await relays(clock, batch_size=7), await relays(clock, batch_size=7)
    tasks = [asyncio.create_task(r.relay.run()) for r in (first, second)]
    try:
        for chunk in range(6):
            await enqueue(engine, topics.results_topic, 20, start=chunk * 20)
            for r in (first, second):
                r.relay.notify()
        await all_published(engine)
        # Exactly one of them holds the lease (the clock never moved, so it never changed).
        assert [first.relay.holding, second.relay.holding].count(True) == 1
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    for r in (first, second):
        await r.relay.stop()
        await r.producer.stop()
    assert_each_once_in_order(await read_all(topics), 120)


async def test_a_holder_that_stops_releases_and_the_other_takes_over_at_once(
    engine: AsyncEngine, topics: Settings, relays
) -> None:
    clock = Clock()  # never moves: the lease changes hands by release only
    holder, standby = await relays(clock), await relays(clock)
    await enqueue(engine, topics.results_topic, 10)
    assert await holder.relay.publish_once() == 10
    await enqueue(engine, topics.results_topic, 10, start=10)
    assert await standby.relay.publish_once() == 0
    assert not standby.relay.holding

    await holder.relay.stop()  # drains rows 10-19, then releases
    await holder.relay.stop()  # safe twice
    async with engine.connect() as conn:
        assert (await conn.execute(select(outbox_lease))).all() == []

    await enqueue(engine, topics.results_topic, 10, start=20)
    assert await standby.relay.publish_once() == 10
    assert standby.relay.holding
    for r in (holder, standby):
        await r.producer.stop()
    assert_each_once_in_order(await read_all(topics), 30)


async def test_an_expired_lease_is_taken_over_and_its_old_holder_publishes_nothing(
    engine: AsyncEngine, topics: Settings, relays
) -> None:
    clock = Clock()
    holder, standby = await relays(clock), await relays(clock)
    await enqueue(engine, topics.results_topic, 5)
    assert await holder.relay.publish_once() == 5

    # The holder is paused (or dead) past its lease; the standby takes over.
    await enqueue(engine, topics.results_topic, 5, start=5)
    clock.now += LEASE - timedelta(seconds=1)
    assert await standby.relay.publish_once() == 0, "not expired yet"
    clock.now += timedelta(seconds=1)
    assert await standby.relay.publish_once() == 5
    async with engine.connect() as conn:
        assert (await conn.execute(select(outbox_lease.c.holder))).scalar_one() == (
            standby.lease.holder
        )

    # The old holder wakes up with rows to publish: it finds the lease gone and stays quiet.
    await enqueue(engine, topics.results_topic, 5, start=10)
    assert await holder.relay.publish_once() == 0
    assert not holder.relay.holding
    await holder.relay.drain()  # the shutdown path does not publish either
    assert await unpublished_count(engine) == 5
    assert await standby.relay.publish_once() == 5
    for r in (holder, standby):
        await r.producer.stop()
    assert_each_once_in_order(await read_all(topics), 15)


async def test_a_relay_that_lost_its_lease_does_not_publish_while_the_new_holder_does(
    engine: AsyncEngine, topics: Settings, relays
) -> None:
    clock = Clock()
    first, second = await relays(clock, batch_size=4), await relays(clock, batch_size=4)
    await enqueue(engine, topics.results_topic, 12)
    assert await first.relay.publish_once() == 4
    clock.now += LEASE  # first is paused past its lease between two batches
    assert await second.relay.publish_once() == 4
    for _ in range(3):
        assert await first.relay.publish_once() == 0
    assert await second.relay.publish_once() == 4
    assert await first.relay.publish_once() == 0
    # The new holder renews as it goes, so the old one never gets back in while it lives.
    clock.now += LEASE / 3
    assert await second.relay.publish_once() == 0
    clock.now += LEASE * 2 / 3
    assert await first.relay.publish_once() == 0
    assert await unpublished_count(engine) == 0
    for r in (first, second):
        await r.producer.stop()
    assert_each_once_in_order(await read_all(topics), 12)


# The lease on its own, without Kafka.


class SteppingClock:
    """Moves forward by ``step`` each time it is read: a database that answers slowly."""

    def __init__(self, step: timedelta) -> None:
        self.now = Clock().now
        self.step = step

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


async def test_only_one_of_many_contenders_takes_a_free_lease(engine: AsyncEngine) -> None:
    clock = Clock()
    leases = [OutboxLease(GroupCommit(engine), duration=LEASE, clock=clock) for _ in range(8)]
    won = await asyncio.gather(*(lease.acquire() for lease in leases))
    assert won.count(True) == 1
    winner = leases[won.index(True)]
    assert await winner.acquire()  # a renewal
    assert not any(
        await asyncio.gather(*(other.acquire() for other in leases if other is not winner))
    )


async def test_release_only_gives_up_ones_own_lease(engine: AsyncEngine) -> None:
    clock = Clock()
    one = OutboxLease(GroupCommit(engine), duration=LEASE, clock=clock, holder="one")
    two = OutboxLease(GroupCommit(engine), duration=LEASE, clock=clock, holder="two")
    assert await one.acquire()
    await two.release()  # not its lease: a no-op
    assert not await two.acquire()
    await one.release()
    await one.release()
    assert await two.acquire()
    assert not await one.acquire()


async def test_a_renewal_that_took_over_half_the_lease_is_not_trusted(engine: AsyncEngine) -> None:
    slow = OutboxLease(
        GroupCommit(engine), duration=LEASE, clock=SteppingClock(LEASE * 0.6), holder="slow"
    )
    assert not await slow.acquire()
    fast = OutboxLease(
        GroupCommit(engine), duration=LEASE, clock=SteppingClock(LEASE * 0.1), holder="slow"
    )
    assert await fast.acquire()


def test_the_lease_must_be_renewed_well_within_its_duration() -> None:
    with pytest.raises(ValueError, match="PAYGATE_OUTBOX_LEASE_RENEW_S"):
        Settings(outbox_lease_s=2.0, outbox_lease_renew_s=1.0)
    Settings(outbox_lease_s=3.0, outbox_lease_renew_s=1.0)


def _lease_statements(engine: AsyncEngine) -> list[str]:
    """Records every statement on the lease table that ``engine`` runs from now on."""
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "outbox_lease" in statement:
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    return seen


async def test_a_renewal_younger_than_trust_for_is_trusted_without_a_statement(
    engine: AsyncEngine,
) -> None:
    clock = Clock()
    trust = LEASE / 5
    one = OutboxLease(
        GroupCommit(engine), duration=LEASE, clock=clock, holder="one", trust_for=trust
    )
    two = OutboxLease(
        GroupCommit(engine), duration=LEASE, clock=clock, holder="two", trust_for=trust
    )
    statements = _lease_statements(engine)
    assert await one.acquire()
    assert len(statements) == 1
    clock.now += trust / 2
    assert await one.acquire()  # trusted: no statement
    assert len(statements) == 1
    assert not await two.acquire()  # the lease is still one's in the database
    clock.now += trust
    assert await one.acquire()  # older than trust_for: renewed by a statement
    assert len(statements) == 3


async def test_a_trusting_holder_paused_past_its_lease_publishes_nothing(
    engine: AsyncEngine,
) -> None:
    clock = Clock()
    trust = LEASE / 5
    one = OutboxLease(
        GroupCommit(engine), duration=LEASE, clock=clock, holder="one", trust_for=trust
    )
    two = OutboxLease(
        GroupCommit(engine), duration=LEASE, clock=clock, holder="two", trust_for=trust
    )
    assert await one.acquire()
    clock.now += LEASE  # one is paused past its lease; two takes it over
    assert await two.acquire()
    assert not await one.acquire()  # its renewal is too old to trust: asked, and refused
    assert not await one.acquire()
    await two.release()
    assert await one.acquire()
    await one.release()  # forgets the renewal: the next acquire asks the database
    assert await two.acquire()
    assert not await one.acquire()


async def test_a_renewal_is_trusted_for_at_most_half_the_lease(engine: AsyncEngine) -> None:
    with pytest.raises(ValueError, match="half"):
        OutboxLease(GroupCommit(engine), duration=LEASE, trust_for=LEASE * 0.6)
