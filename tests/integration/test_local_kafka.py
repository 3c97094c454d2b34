"""devtools.kafka.LocalKafka against a real broker, checked with aiokafka.

One broker is started for the whole module (each start costs 5-20 s on a 2-core
machine). The last two tests change its lifecycle: the restart test brings it back on
the same address (the second and last JVM start of the module), and the stop test ends
it. They are kept last in the file; the ``bootstrap`` fixture would start the broker
again if they were run earlier, so a reordering only costs time.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devtools.kafka import KafkaLaunchError, LocalKafka

pytestmark = pytest.mark.integration

CONSUME_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def kafka() -> Iterator[LocalKafka]:
    broker = LocalKafka(heap_mb=512, startup_timeout_s=180.0)
    started = time.monotonic()
    broker.start()
    print(f"broker started in {time.monotonic() - started:.1f} s: {broker!r}")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def bootstrap(kafka: LocalKafka) -> str:
    """The broker's address; start() only starts it if a previous test stopped it."""
    return kafka.start()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def create_topic(bootstrap: str, name: str, partitions: int = 3) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=name, num_partitions=partitions, replication_factor=1)]
        )
    finally:
        await admin.close()


async def consume_until(
    consumer: AIOKafkaConsumer, done: Callable[[list[ConsumerRecord]], bool]
) -> list[ConsumerRecord]:
    """Poll until ``done(records so far)`` holds; fail after CONSUME_TIMEOUT_S."""
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + CONSUME_TIMEOUT_S
    while not done(records):
        if time.monotonic() > deadline:
            values = [r.value for r in records]
            pytest.fail(f"timed out after {CONSUME_TIMEOUT_S} s; got {values}")
        batches = await consumer.getmany(timeout_ms=500)
        for batch in batches.values():
            records.extend(batch)
    return records


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def by_partition(records: list[ConsumerRecord]) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    for record in records:
        out.setdefault(record.partition, []).append(record.value)
    return out


async def test_admin_creates_topic_with_three_partitions(bootstrap: str) -> None:
    topic = unique("admin")
    await create_topic(bootstrap, topic, partitions=3)

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        assert topic in await admin.list_topics()
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert described["error_code"] == 0
    assert sorted(p["partition"] for p in described["partitions"]) == [0, 1, 2]


async def test_consumer_group_resumes_after_committed_offset(bootstrap: str) -> None:
    topic, group = unique("group"), unique("g")
    await create_topic(bootstrap, topic, partitions=3)
    partitions = [TopicPartition(topic, p) for p in range(3)]

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for p in range(3):
            for i in range(3):
                await producer.send_and_wait(topic, f"p{p}-{i}".encode(), partition=p)
    finally:
        await producer.stop()

    def group_consumer() -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        consumer.subscribe([topic])
        return consumer

    # First member reads everything but commits only "two records done" per partition.
    first = group_consumer()
    await first.start()
    try:
        records = await consume_until(first, lambda rs: len(rs) >= 9)
        assert len(records) == 9
        await first.commit(dict.fromkeys(partitions, 2))
        assert [await first.committed(tp) for tp in partitions] == [2, 2, 2]
    finally:
        await first.stop()

    # A new member of the same group resumes at offset 2 in every partition. A sentinel
    # produced into each partition marks the end, so completeness needs no idle wait.
    second = group_consumer()
    await second.start()
    try:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for p in range(3):
                await producer.send_and_wait(topic, f"p{p}-end".encode(), partition=p)
        finally:
            await producer.stop()
        records = await consume_until(
            second, lambda rs: sum(r.value.endswith(b"-end") for r in rs) == 3
        )
    finally:
        await second.stop()
    assert by_partition(records) == {
        p: [f"p{p}-2".encode(), f"p{p}-end".encode()] for p in range(3)
    }
    assert min(r.offset for r in records) == 2


async def test_transactions_visible_to_read_committed_only_when_committed(
    bootstrap: str,
) -> None:
    topic = unique("txn")
    await create_topic(bootstrap, topic, partitions=3)
    tp = TopicPartition(topic, 0)

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=unique("tx"))
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-1", partition=0)
            await producer.send_and_wait(topic, b"committed-2", partition=0)
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted", partition=0)
        await producer.abort_transaction()
        async with producer.transaction():  # its commit marker ends the check below
            await producer.send_and_wait(topic, b"committed-3", partition=0)
    finally:
        await producer.stop()

    async def read_all(isolation_level: str) -> list[bytes]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            isolation_level=isolation_level,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            records = await consume_until(
                consumer, lambda rs: any(r.value == b"committed-3" for r in rs)
            )
        finally:
            await consumer.stop()
        return [r.value for r in records]

    assert await read_all("read_committed") == [b"committed-1", b"committed-2", b"committed-3"]
    # The aborted record is in the log; only read_committed filters it out.
    assert b"aborted" in await read_all("read_uncommitted")


# --- lifecycle tests: keep these last (see the module docstring) --------------------------


async def test_restart_after_kill_keeps_data_and_address(kafka: LocalKafka, bootstrap: str) -> None:
    topic = unique("restart")
    await create_topic(bootstrap, topic, partitions=3)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(6):
            await producer.send_and_wait(topic, f"before-{i}".encode(), partition=i % 3)
    finally:
        await producer.stop()

    old_pid = kafka.pid
    assert old_pid is not None
    # What a chaos test does: crash the broker, then bring it back. restart() blocks
    # (bounded by startup_timeout_s) until the broker serves again, so it runs in a thread.
    kafka.kill()
    assert kafka.pid is None
    assert process_gone(old_pid)
    await asyncio.to_thread(kafka.restart)

    assert kafka.bootstrap_servers == bootstrap
    assert kafka.pid is not None
    assert kafka.pid != old_pid

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        assert topic in await admin.list_topics()
    finally:
        await admin.close()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        records = await consume_until(consumer, lambda rs: len(rs) >= 6)
    finally:
        await consumer.stop()
    assert sorted(r.value for r in records) == [f"before-{i}".encode() for i in range(6)]


def test_stop_twice_is_fine_and_the_process_is_gone(kafka: LocalKafka, bootstrap: str) -> None:
    pid = kafka.pid
    work_dir = kafka.work_dir
    assert pid is not None
    assert work_dir is not None
    assert work_dir.is_dir()

    kafka.stop()
    kafka.stop()

    assert kafka.pid is None
    assert not kafka.running
    assert process_gone(pid)  # reaped by stop(): no such process any more
    assert not work_dir.exists()  # the temp work dir it created is removed
    with pytest.raises(KafkaLaunchError):
        _ = kafka.bootstrap_servers
