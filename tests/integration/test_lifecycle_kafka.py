"""Partial captures and cancels on a real broker: the commands topic carries CreatePayment,
CapturePayment (v2, with an amount) and CancelPayment records side by side, keyed by order;
the consumer's dispatch table routes each to its handler, in order, and the results topic
says what happened."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from domain.errors import ErrorCode
from domain.events import PaymentResult
from domain.payments import payment_request_id_for
from domain.status import PaymentStatus
from providers.sandbox import InProcessSandboxProvider
from providers.sandbox.records import SandboxStatus
from schemas.codec import CANCEL_PAYMENT, CAPTURE_PAYMENT, AvroCodec
from schemas.payments import PaymentMessages
from schemas.registry import FileSchemaRegistry
from tests.support.builders import encoded_command
from tests.support.consumer_run import running_consumer
from tests.support.kafka_io import produce, read_until

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
CODEC = AvroCodec(FileSchemaRegistry.bundled())
AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def follow_up(payment_id: str, order_id: str, **more: object) -> dict[str, object]:
    return {"paymentRequestId": payment_id, "orderId": order_id, "requestedAt": AT, **more}


async def test_a_partial_capture_and_a_cancel_of_two_orders_flow_in_order(topics):
    """Order A: authorize, capture 20.00 of 50.00, then a cancel (refused: captured).
    Order B: authorize, cancel, then a capture (refused: canceled)."""
    key_a, create_a, record_a = encoded_command(amount=Decimal("50.00"), capture=False)
    key_b, create_b, record_b = encoded_command(amount=Decimal("50.00"), capture=False)
    id_a = payment_request_id_for(record_a["orderId"], record_a["idempotencyKey"])
    id_b = payment_request_id_for(record_b["orderId"], record_b["idempotencyKey"])
    a = follow_up(id_a, record_a["orderId"])
    b = follow_up(id_b, record_b["orderId"])
    await produce(
        topics.kafka_bootstrap_servers,
        topics.commands_topic,
        [
            (key_a, create_a),
            (key_b, create_b),
            (key_a, CODEC.encode(CAPTURE_PAYMENT, {**a, "amount": Decimal("20.00")})),
            (key_b, CODEC.encode(CANCEL_PAYMENT, b)),
            (key_a, CODEC.encode(CANCEL_PAYMENT, a)),
            (key_b, CODEC.encode(CAPTURE_PAYMENT, {**b, "amount": None})),
        ],
    )
    provider = InProcessSandboxProvider()
    async with running_consumer(topics, provider) as metrics:
        records = await read_until(
            topics.kafka_bootstrap_servers, topics.results_topic, lambda rs: len(rs) >= 6
        )
    events = [MESSAGES.decode_any_result(r.value) for r in records]
    assert all(isinstance(e, PaymentResult) for e in events)
    of_a = [(e.status, e.error and e.error.code) for e in events if e.payment_request_id == id_a]
    of_b = [(e.status, e.error and e.error.code) for e in events if e.payment_request_id == id_b]
    assert of_a == [
        (PaymentStatus.AUTHORIZED, None),
        (PaymentStatus.SUCCEEDED, None),
        (PaymentStatus.SUCCEEDED, ErrorCode.PAYMENT_NOT_CANCELABLE),
    ]
    assert of_b == [
        (PaymentStatus.AUTHORIZED, None),
        (PaymentStatus.CANCELED, None),
        (PaymentStatus.CANCELED, ErrorCode.PAYMENT_NOT_CAPTURABLE),
    ]
    charges = {c.payment_reference: c for c in await provider.acquirer.charges()}
    assert (charges[id_a].status, charges[id_a].captured_minor) == (SandboxStatus.SUCCEEDED, 2_000)
    assert (charges[id_b].status, charges[id_b].captured_minor) == (SandboxStatus.CANCELED, 0)
    consumed = metrics.commands_consumed
    assert consumed.labels("capture", "succeeded")._value.get() == 1
    assert consumed.labels("cancel", "canceled")._value.get() == 1
    assert consumed.labels("cancel", "refused")._value.get() == 1
    assert consumed.labels("capture", "refused")._value.get() == 1
