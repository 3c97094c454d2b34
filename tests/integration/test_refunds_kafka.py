"""Refund commands on a real broker: processed after their payment, results on the topic."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from consumer.dead_letters import HEADER_ERROR_CODE, HEADER_REASON
from domain.events import PaymentResult, RefundResult
from domain.payments import payment_request_id_for
from domain.refunds import RefundStatus, refund_id_for
from domain.status import PaymentStatus
from providers.sandbox import InProcessSandboxProvider
from schemas.codec import REFUND_PAYMENT, AvroCodec
from schemas.payments import PaymentMessages
from schemas.registry import FileSchemaRegistry
from tests.support.builders import encoded_command, unique
from tests.support.consumer_run import running_consumer
from tests.support.kafka_io import produce, read_until

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
CODEC = AvroCodec(FileSchemaRegistry.bundled())


def refund_record(payment_id: str, order_id: str, amount: str | None, **changes):
    record = {
        "idempotencyKey": unique("refund"),
        "paymentRequestId": payment_id,
        "orderId": order_id,
        "amount": None if amount is None else Decimal(amount),
        "currency": None if amount is None else "EUR",
        "reason": "requested_by_customer",
        "requestedAt": datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
    }
    record.update(changes)
    return record


async def test_payment_then_refunds_of_one_order_flow_in_order(topics):
    """Payment and refunds are sent back to back, keyed by the order: the consumer must
    process them in that order, or the refunds would find no succeeded payment."""
    order_key, payment_value, payment = encoded_command(amount=Decimal("50.00"))
    payment_id = payment_request_id_for(payment["orderId"], payment["idempotencyKey"])
    partial = refund_record(payment_id, payment["orderId"], "20.00")
    rest = refund_record(payment_id, payment["orderId"], None)
    too_late = refund_record(payment_id, payment["orderId"], "0.01")
    await produce(
        topics.kafka_bootstrap_servers,
        topics.commands_topic,
        [(order_key, payment_value)]
        + [(order_key, CODEC.encode(REFUND_PAYMENT, r)) for r in (partial, rest, too_late)],
    )
    provider = InProcessSandboxProvider()
    async with running_consumer(topics, provider) as metrics:
        records = await read_until(
            topics.kafka_bootstrap_servers, topics.results_topic, lambda rs: len(rs) >= 4
        )
    events = [MESSAGES.decode_any_result(r.value) for r in records]
    assert {r.key for r in records} == {order_key}
    paid, *refunds = events
    assert isinstance(paid, PaymentResult)
    assert paid.status is PaymentStatus.SUCCEEDED
    assert all(isinstance(e, RefundResult) for e in refunds)
    by_id = {e.refund_id: e for e in refunds if isinstance(e, RefundResult)}

    first = by_id[refund_id_for(payment_id, partial["idempotencyKey"])]
    assert (first.status, first.amount_minor) == (RefundStatus.SUCCEEDED, 2_000)
    assert first.payment_status is PaymentStatus.PARTIALLY_REFUNDED
    second = by_id[refund_id_for(payment_id, rest["idempotencyKey"])]
    assert (second.status, second.amount_minor) == (RefundStatus.SUCCEEDED, 3_000)
    assert (second.payment_status, second.payment_refunded_minor) == (
        PaymentStatus.REFUNDED,
        5_000,
    )
    refused = by_id[refund_id_for(payment_id, too_late["idempotencyKey"])]
    assert refused.status is RefundStatus.FAILED
    assert refused.error is not None
    assert refused.error.code.value == "refund_exceeds_captured"
    assert sorted(r.amount_minor for r in await provider.acquirer.refunds()) == [2_000, 3_000]
    assert metrics.commands_consumed.labels("refund", "succeeded")._value.get() == 2
    assert metrics.commands_consumed.labels("refund", "refused")._value.get() == 1


async def test_an_invalid_refund_command_is_dead_lettered(topics):
    bad = refund_record("pay_" + "0" * 32, "order-x", "1.00", currency=None)
    await produce(
        topics.kafka_bootstrap_servers,
        topics.commands_topic,
        [(b"order-x", CODEC.encode(REFUND_PAYMENT, bad))],
    )
    async with running_consumer(topics, InProcessSandboxProvider()):
        (dead,) = await read_until(
            topics.kafka_bootstrap_servers, topics.dlq_topic, lambda rs: len(rs) >= 1
        )
    headers = {k: v.decode() for k, v in dead.headers}
    assert headers[HEADER_ERROR_CODE] == "invalid_request"
    assert headers[HEADER_REASON] == "invalid_value:currency"
