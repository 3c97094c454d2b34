"""KafkaCommandPublisher: every hand-over to Kafka is bounded, and what happens after the
deadline is observed, never silent. Against a fake producer that holds records the way
aiokafka does while a partition leader is unreachable; the real broker is in
tests/integration/test_dependency_outages.py."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, NotLeaderForPartitionError

from domain.errors import ErrorCode, PaygateError
from producer.command_publisher import KafkaCommandPublisher
from schemas.payments import PaymentMessages
from tests.support.builders import create_payment
from tests.support.held_producer import HeldProducer

pytestmark = pytest.mark.unit

TOPIC = "payments.commands.test"


def publisher(producer: HeldProducer) -> KafkaCommandPublisher:
    return KafkaCommandPublisher(producer, PaymentMessages.bundled(), TOPIC, timeout_s=0.05)


def messages(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.name.startswith("paygate.http.publish")
    ]


async def test_an_acknowledged_command_is_published_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = HeldProducer()
    producer.auto_ack = True
    caplog.set_level(logging.DEBUG)
    await publisher(producer).publish_create_payment(create_payment())
    assert len(producer.queued) == 1
    assert messages(caplog) == []


async def test_an_unacknowledged_command_is_503_and_its_late_delivery_is_observed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = HeldProducer()
    caplog.set_level(logging.DEBUG)
    command = create_payment()
    with pytest.raises(PaygateError) as raised:
        await publisher(producer).publish_create_payment(command)
    assert raised.value.code is ErrorCode.SERVICE_UNAVAILABLE
    assert "same Idempotency-Key" in raised.value.message
    assert messages(caplog) == [("ERROR", "kafka unreachable")]

    # The record stays queued (aiokafka cannot take it back) and is acknowledged later:
    # the very command the client will send again under the same key.
    [(value, delivery)] = producer.queued
    assert PaymentMessages.bundled().decode_command(value).payment_request_id == (
        command.payment_request_id
    )
    assert not delivery.cancelled()
    delivery.set_result("metadata")
    await asyncio.sleep(0)  # let the done-callback run
    late = [r for r in caplog.records if "reached Kafka later" in r.getMessage()]
    assert [r.order_id for r in late] == [command.order_id]  # type: ignore[attr-defined]
    assert ("INFO", "kafka reachable again after") in [
        (level, text[: len("kafka reachable again after")]) for level, text in messages(caplog)
    ]


async def test_a_late_failure_is_logged_and_its_exception_retrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = HeldProducer()
    caplog.set_level(logging.DEBUG)
    loop = asyncio.get_running_loop()
    unretrieved: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    with pytest.raises(PaygateError):
        await publisher(producer).publish_create_payment(create_payment())
    [(_, delivery)] = producer.queued
    delivery.set_exception(NotLeaderForPartitionError())
    await asyncio.sleep(0)
    del delivery
    producer.queued.clear()
    gc.collect()
    loop.set_exception_handler(None)
    assert unretrieved == []
    assert ("WARNING", "a payment answered 503 was never handed to Kafka") in messages(caplog)


async def test_a_send_that_cannot_even_queue_is_503_and_leaves_nothing_queued() -> None:
    producer = HeldProducer()
    producer.enqueue_blocks = True
    with pytest.raises(PaygateError) as raised:
        await publisher(producer).publish_create_payment(create_payment())
    assert raised.value.code is ErrorCode.SERVICE_UNAVAILABLE
    assert producer.queued == []


async def test_a_kafka_error_is_503_at_once() -> None:
    producer = HeldProducer()
    producer.enqueue_error = KafkaTimeoutError()
    with pytest.raises(PaygateError) as raised:
        await publisher(producer).publish_create_payment(create_payment())
    assert raised.value.code is ErrorCode.SERVICE_UNAVAILABLE
    assert isinstance(raised.value.__cause__, KafkaTimeoutError)


def test_the_deadline_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        KafkaCommandPublisher(HeldProducer(), PaymentMessages.bundled(), TOPIC, timeout_s=0)
