"""A Schema Registry outage after start-up, with a real registry (Apicurio) and a real
broker: the registry is stopped mid-run and commands keep flowing. The consumer decodes
and writes with the ids it cached at start, the facade's result listener decodes the
results with its own (and with one it fetched once, before the outage, for a result a
newer paygate wrote), nothing is dead-lettered and every waiting request gets its result."""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from prometheus_client import CollectorRegistry

from domain.refunds import RefundPayment
from http_facade.result_feed import KafkaResultFeed
from http_facade.result_listener import ResultListener
from paygate.schema_source import payment_messages
from paygate.settings import Settings
from providers.sandbox import InProcessSandboxProvider
from schemas.payments import payment_result_to_record
from schemas.registry import FileSchemaRegistry
from telemetry.metrics import Metrics
from tests.support.builders import create_payment
from tests.support.consumer_run import running_consumer
from tests.support.kafka_io import produce
from tests.support.result_events import payment_result
from tests.support.services import service_missing

pytestmark = pytest.mark.integration


class NothingFinalYet:
    """The store as a waiter sees it: never final, so only an event read from the results
    topic can wake it. ``looked_up`` says the waiter is registered."""

    def __init__(self) -> None:
        self.looked_up = asyncio.Event()

    async def get_payment(self, payment_request_id: str) -> None:
        self.looked_up.set()

    async def get(self, refund_id: str) -> None:
        self.looked_up.set()


@pytest.fixture
def own_registry() -> Iterator[object]:
    """A registry of this test's own (the session's is shared, and this one is stopped)."""
    from devtools.schema_registry import LocalSchemaRegistry, RegistryLaunchError

    registry = LocalSchemaRegistry()
    try:
        registry.start()
    except RegistryLaunchError as exc:
        service_missing(f"the local Schema Registry did not start: {exc}")
    try:
        yield registry
    finally:
        registry.stop()


def _answers(url: str) -> bool:
    """Whether anything accepts a connection on the registry's port."""
    where = urlsplit(url)
    try:
        with socket.create_connection((where.hostname, where.port), timeout=2.0):
            return True
    except OSError:
        return False


def _newer_result(url: str, topic: str) -> tuple[str, bytes]:
    """(payment id, bytes) of a result serialized by confluent-kafka's AvroSerializer with
    a newer PaymentResult schema, registered in the registry at ``url``."""
    newest = [s for s in FileSchemaRegistry.bundled_schemas() if s["name"] == "PaymentResult"]
    extra = {"name": "region", "type": ["null", "string"], "default": None}
    schema = json.dumps({**newest[-1], "fields": [*newest[-1]["fields"], extra]})
    serializer = AvroSerializer(
        SchemaRegistryClient({"url": url}),
        schema,
        conf={"subject.name.strategy": topic_record_subject_name_strategy},
    )
    payment_id = "pay_" + uuid.uuid4().hex
    record = {**payment_result_to_record(payment_result(payment_id)), "region": "eu"}
    value = serializer(record, SerializationContext(topic, MessageField.VALUE))
    assert value is not None
    return payment_id, value


async def _publish_and_wait(
    listener: ResultListener, store: NothingFinalYet, settings: Settings, result: tuple[str, bytes]
) -> None:
    payment_id, value = result
    store.looked_up.clear()
    waiter = asyncio.create_task(listener.wait_for_final(payment_id, 60.0))
    await store.looked_up.wait()
    await produce(settings.kafka_bootstrap_servers or "", settings.results_topic, [(b"o", value)])
    assert await waiter is True


async def test_a_registry_outage_after_start_loses_and_dead_letters_nothing(
    topics: Settings, own_registry
) -> None:
    url = own_registry.confluent_url
    settings = topics.model_copy(update={"schema_registry_url": url})
    # An upstream producer writing with the registry's ids, and the facade's source.
    upstream = await payment_messages(settings)
    facade = await payment_messages(settings)
    store = NothingFinalYet()
    listener_metrics = Metrics(CollectorRegistry())
    listener = ResultListener(
        open_feed=functools.partial(
            KafkaResultFeed.open,
            {"bootstrap_servers": settings.kafka_bootstrap_servers},
            settings.results_topic,
        ),
        decoder=facade,
        queries=store,
        refunds=store,
        metrics=listener_metrics,
    )

    async def submit_and_wait(key: bytes, value: bytes, waited_id: str) -> None:
        store.looked_up.clear()
        # A generous bound, not a measurement: False only if the result never comes.
        waiter = asyncio.create_task(listener.wait_for_final(waited_id, 60.0))
        await store.looked_up.wait()
        await produce(
            settings.kafka_bootstrap_servers or "", settings.commands_topic, [(key, value)]
        )
        assert await waiter is True, waited_id

    async with running_consumer(settings, InProcessSandboxProvider()) as metrics:
        await listener.start()
        try:
            before = create_payment()
            await submit_and_wait(
                before.order_id.encode(),
                upstream.encode_command(before),
                before.payment_request_id,
            )

            # A newer paygate's results: PaymentResult with a field more, registered by
            # another library's serializer under an id this facade has never seen.
            newer = [_newer_result(url, settings.results_topic) for _ in range(2)]
            await _publish_and_wait(listener, store, settings, newer[0])

            own_registry.stop()
            assert not _answers(url)  # the outage is real
            await _publish_and_wait(listener, store, settings, newer[1])  # fetched id, cached

            for _ in range(3):
                command = create_payment()
                await submit_and_wait(
                    command.order_id.encode(),
                    upstream.encode_command(command),
                    command.payment_request_id,
                )
            refund = RefundPayment.create(
                idempotency_key="outage-refund",
                payment_request_id=before.payment_request_id,
                order_id=before.order_id,
                amount=None,
                reason=None,
                requested_at=datetime.now(UTC),
            )
            await submit_and_wait(
                before.order_id.encode(), upstream.encode_refund(refund), refund.refund_id
            )
        finally:
            await listener.stop()

    # Every dead letter counts here, whatever its kind (consumer/dead_letters.py).
    assert metrics.commands_consumed.labels("unknown", "dead_lettered")._value.get() == 0
    assert metrics.commands_consumed.labels("payment", "succeeded")._value.get() == 4
    assert metrics.commands_consumed.labels("refund", "succeeded")._value.get() == 1
    skipped = listener_metrics.registry.get_sample_value(
        "paygate_result_listener_errors_total", {"reason": "undecodable"}
    )
    assert not skipped
