"""What an operator reads while a consumer holds commands, on a real broker.

Commands held at the provider are not committed, so they are lag; their attempts are
open, so they are in-doubt attempts; when the provider lets them through, lag and
in-doubt attempts drain to zero and the outbox empties. A consumer group that never
polled (no runner) lags by every command in the topic.
"""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from consumer.lag import ConsumerLag
from paygate.settings import Settings
from schemas.codec import CREATE_PAYMENT, AvroCodec
from schemas.registry import FileSchemaRegistry
from telemetry.metrics import Metrics
from tests.support.builders import create_payment_record
from tests.support.consumer_run import running_consumer
from tests.support.gated_provider import GatedProvider
from tests.support.kafka_io import produce, wait_for
from tests.support.metric_samples import sample_sum

pytestmark = pytest.mark.integration

CODEC = AvroCodec(FileSchemaRegistry.bundled())
N = 7


async def _produce_payments(settings: Settings, n: int) -> None:
    records = [create_payment_record() for _ in range(n)]
    assert settings.kafka_bootstrap_servers is not None
    await produce(
        settings.kafka_bootstrap_servers,
        settings.commands_topic,
        [(r["orderId"].encode(), CODEC.encode(CREATE_PAYMENT, r)) for r in records],
    )


async def test_held_commands_are_lag_and_in_doubt_attempts_until_they_drain(topics) -> None:
    settings = topics.model_copy(update={"ops_sample_interval_s": 0.1})
    provider = GatedProvider(open_gate=False)
    await _produce_payments(settings, N)
    async with running_consumer(settings, provider) as metrics:

        def gauge(name: str) -> float:
            return sample_sum(metrics, f"paygate_{name}")

        await wait_for(lambda: len(provider.started) == N)
        await wait_for(lambda: gauge("consumer_lag") == N and gauge("in_doubt_attempts") == N)
        assert gauge("consumer_assigned_partitions") == settings.topic_partitions
        assert gauge("commands_in_flight_oldest_age_seconds") > 0
        assert gauge("in_doubt_oldest_age_seconds") >= 0
        partitions = {
            s.labels["partition"]
            for f in metrics.registry.collect()
            for s in f.samples
            if s.name == "paygate_consumer_lag"
        }
        assert partitions == {str(p) for p in range(settings.topic_partitions)}

        provider.gate.set()
        await wait_for(
            lambda: (
                gauge("consumer_lag") == 0
                and gauge("in_doubt_attempts") == 0
                and gauge("outbox_published_total") == N
                and gauge("outbox_backlog") == 0
            )
        )
        assert gauge("commands_in_flight_oldest_age_seconds") == 0
        assert gauge("command_seconds_count") == N
        assert gauge("outbox_oldest_age_seconds") == 0
    # Stopped: it holds no partition, and reports none.
    assert gauge("consumer_assigned_partitions") == 0
    assert gauge("consumer_lag") == 0


async def test_a_group_that_never_polled_lags_by_every_command(topics) -> None:
    await _produce_payments(topics, N)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=topics.kafka_bootstrap_servers,
        group_id=topics.consumer_group,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        consumer.assign(
            [TopicPartition(topics.commands_topic, p) for p in range(topics.topic_partitions)]
        )
        metrics = Metrics(CollectorRegistry())
        lags = await ConsumerLag(consumer, metrics).sample()
        assert sum(lags.values()) == N
        assert sample_sum(metrics, "paygate_consumer_lag") == N
    finally:
        await consumer.stop()
