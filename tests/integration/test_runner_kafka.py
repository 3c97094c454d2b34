"""Key-ordered concurrency, offsets, revocation, shutdown and slow work, on a real broker."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from domain.payments import payment_request_id_for
from domain.status import PaymentStatus
from paygate.settings import Settings
from persistence.engine import create_engine
from persistence.payment_store import PaymentStore
from schemas.codec import CREATE_PAYMENT, AvroCodec
from schemas.payments import PaymentMessages
from schemas.registry import FileSchemaRegistry
from tests.support.builders import create_payment_record
from tests.support.consumer_run import running_consumer
from tests.support.gated_provider import GatedProvider
from tests.support.kafka_io import committed_total, read_until, wait_for

pytestmark = pytest.mark.integration

CODEC = AvroCodec(FileSchemaRegistry.bundled())


async def _produce(
    settings: Settings,
    records: list[dict],
    partition: int | None = None,
    key: bytes | None = None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(
                settings.commands_topic,
                CODEC.encode(CREATE_PAYMENT, record),
                key=key or record["orderId"].encode(),
                partition=partition,
            )
    finally:
        await producer.stop()


async def _final_statuses(settings: Settings, records: list[dict]) -> dict[str, PaymentStatus]:
    engine = create_engine(settings.database_url)
    try:
        store = PaymentStore(engine)
        found: dict[str, PaymentStatus] = {}
        for record in records:
            payment_id = payment_request_id_for(record["orderId"], record["idempotencyKey"])
            payment = await store.get_payment(payment_id)
            if payment is not None:
                found[payment_id] = payment.status
        return found
    finally:
        await engine.dispose()


async def test_the_committed_offset_waits_for_the_slowest_message_of_the_partition(topics):
    provider = GatedProvider(open_gate=False, hold_marked_only=True)
    slow = create_payment_record(metadata={"hold": "yes"})
    fast = [create_payment_record() for _ in range(9)]
    await _produce(topics, [slow, *fast], partition=0)
    bootstrap, group = topics.kafka_bootstrap_servers, topics.consumer_group
    async with running_consumer(topics, provider) as metrics:
        # The nine later messages (other keys) finish while the first is held...
        await read_until(bootstrap, topics.results_topic, lambda rs: len(rs) >= 9)
        await asyncio.sleep(0.5)  # several commit intervals pass
        # ...but the commit may not pass the held one, at offset 0.
        assert await committed_total(bootstrap, group, topics.commands_topic) == 0
        assert metrics.in_flight._value.get() == 1
        provider.gate.set()
        await read_until(bootstrap, topics.results_topic, lambda rs: len(rs) >= 10)

        async def all_committed() -> bool:
            return await committed_total(bootstrap, group, topics.commands_topic) == 10

        await _eventually(all_committed)


async def _eventually(check, timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_one_keys_commands_run_in_order_others_overlap(topics):
    # Three commands under one message key (as one order's commands are; distinct order
    # ids here, so that order protection lets all three reach the provider).
    provider = GatedProvider(delay_s=0.2)
    same_key = [create_payment_record() for _ in range(3)]
    others = [create_payment_record() for _ in range(10)]
    await _produce(topics, same_key, partition=0, key=b"one-key")
    await _produce(topics, others, partition=0)
    async with running_consumer(topics, provider):
        records = await read_until(
            topics.kafka_bootstrap_servers, topics.results_topic, lambda rs: len(rs) >= 13
        )

    events = [PaymentMessages(CODEC).decode_result(r.value) for r in records]
    # Same key, one partition: the three finish in their offset order...
    expected = [payment_request_id_for(r["orderId"], r["idempotencyKey"]) for r in same_key]
    assert [e.payment_request_id for e in events if e.payment_request_id in expected] == expected
    # ...each reaching the provider only after the one before it had finished there, while
    # the other keys ran side by side.
    mine = [step for step in provider.timeline if step[1] in expected]
    assert mine == [(edge, pid) for pid in expected for edge in ("start", "end")]
    assert provider.max_running >= 5


async def test_revocation_mid_flight_loses_nothing_and_charges_once(topics):
    provider = GatedProvider(open_gate=False)
    settings = topics.model_copy(update={"drain_timeout_s": 1.0})
    records = [create_payment_record() for _ in range(30)]
    await _produce(settings, records)
    async with running_consumer(settings, provider) as first:
        await wait_for(lambda: len(provider.started) >= 20)
        # A second consumer joins: partitions move while their work is held at the provider.
        async with running_consumer(settings, provider):
            # The first consumer gives up the held work of the partitions it loses, after
            # drain_timeout_s, uncommitted: the new owner gets it redelivered.
            await wait_for(lambda: first.abandoned._value.get() >= 1, timeout_s=60)
            provider.gate.set()
            await read_until(
                settings.kafka_bootstrap_servers,
                settings.results_topic,
                lambda rs: len({r.key for r in rs}) >= 30,
                timeout_s=90,
            )
    statuses = await _final_statuses(settings, records)
    assert len(statuses) == 30
    assert set(statuses.values()) == {PaymentStatus.SUCCEEDED}
    assert len(provider.charges) == 30
    assert set(provider.charges.values()) == {1}


async def test_graceful_shutdown_finishes_work_in_flight_and_commits_it(topics):
    provider = GatedProvider(delay_s=1.0)
    records = [create_payment_record() for _ in range(20)]
    await _produce(topics, records)
    async with running_consumer(topics, provider) as metrics:
        await wait_for(lambda: len(provider.started) >= 5)
    # run() returned: everything it started was finished (not abandoned) and committed.
    assert metrics.abandoned._value.get() == 0
    assert metrics.in_flight._value.get() == 0
    statuses = await _final_statuses(topics, records)
    assert set(statuses.values()) == {PaymentStatus.SUCCEEDED}
    done = len(statuses)
    assert done >= 5
    committed = await committed_total(
        topics.kafka_bootstrap_servers, topics.consumer_group, topics.commands_topic
    )
    assert committed == done
    # The rest is picked up by the next run; nothing is charged twice.
    async with running_consumer(topics, provider) as metrics:
        await read_until(
            topics.kafka_bootstrap_servers,
            topics.results_topic,
            lambda rs: len({r.key for r in rs}) >= 20,
        )
    assert metrics.commands_consumed.labels("payment", "replayed")._value.get() == 0
    assert set(provider.charges.values()) == {1}
    assert len(provider.charges) == 20


async def test_work_slower_than_max_poll_interval_causes_no_rebalance(topics):
    # Each call takes longer than max.poll.interval.ms, and only two run at once, so the
    # runner sits at capacity with its partitions paused, still polling.
    settings = topics.model_copy(update={"max_poll_interval_ms": 1500, "max_in_flight": 2})
    provider = GatedProvider(delay_s=2.5)
    records = [create_payment_record() for _ in range(6)]
    await _produce(settings, records)
    async with running_consumer(settings, provider) as metrics:
        await read_until(
            settings.kafka_bootstrap_servers,
            settings.results_topic,
            lambda rs: len(rs) >= 6,
            timeout_s=60,
        )
        assert metrics.partitions_revoked._value.get() == 0
    assert set(provider.charges.values()) == {1}
