"""The refund rules, ids and Avro contracts, without I/O."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.events import RefundResult, refund_event_id
from domain.money import Money
from domain.order_protection import refusal_for_new_payment
from domain.refund_rules import refusal_for_refund
from domain.refunds import RefundPayment, RefundReason, RefundStatus, is_refund_id, refund_id_for
from domain.status import ALLOWED_TRANSITIONS, PaymentStatus
from schemas.codec import REFUND_PAYMENT, AvroCodec, CodecError
from schemas.payments import PaymentMessages
from schemas.registry import FileSchemaRegistry
from tests.support.builders import create_payment

pytestmark = pytest.mark.unit

PAYMENT_ID = "pay_" + "1" * 32
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
MESSAGES = PaymentMessages.bundled()


EUR_5 = Money(500, "EUR")


def refund(amount: Money | None = EUR_5, **changes) -> RefundPayment:
    fields: dict[str, Any] = {
        "idempotency_key": "rk-1",
        "payment_request_id": PAYMENT_ID,
        "order_id": "order-1",
        "amount": amount,
        "reason": "duplicate",
        "requested_at": NOW,
    }
    fields.update(changes)
    return RefundPayment.create(**fields)


def test_refund_ids_are_deterministic_per_payment_and_key():
    assert refund().refund_id == refund_id_for(PAYMENT_ID, "rk-1")
    assert is_refund_id(refund().refund_id)
    assert refund().refund_id != refund(idempotency_key="rk-2").refund_id
    assert refund().refund_id != refund_id_for("pay_" + "2" * 32, "rk-1")


def test_the_fingerprint_tells_replays_from_conflicts():
    assert (
        refund().parameters_fingerprint()
        == refund(requested_at=NOW.replace(hour=13)).parameters_fingerprint()
    )
    assert refund().parameters_fingerprint() != refund(Money(501, "EUR")).parameters_fingerprint()
    assert refund().parameters_fingerprint() != refund(None).parameters_fingerprint()
    assert refund().parameters_fingerprint() != refund(reason="fraudulent").parameters_fingerprint()


@pytest.mark.parametrize(
    ("changes", "code", "param"),
    [
        ({"reason": "because"}, ErrorCode.INVALID_REQUEST, "reason"),
        ({"payment_request_id": "pay_nope"}, ErrorCode.NOT_FOUND, "paymentRequestId"),
        ({"idempotency_key": "has space"}, ErrorCode.INVALID_REQUEST, "idempotencyKey"),
        ({"order_id": ""}, ErrorCode.INVALID_REQUEST, "orderId"),
    ],
)
def test_invalid_refund_commands_are_refused_with_a_code(changes, code, param):
    with pytest.raises(PaygateError) as refused:
        refund(**changes)
    assert (refused.value.code, refused.value.param) == (code, param)


@pytest.mark.parametrize(
    "status", [PaymentStatus.PENDING, PaymentStatus.PROCESSING, PaymentStatus.FAILED]
)
def test_only_a_captured_payment_is_refundable(status):
    error = refusal_for_refund(
        status=status, payment_currency="EUR", remaining_minor=1_000, requested=None
    )
    assert error is not None
    assert error.code is ErrorCode.PAYMENT_NOT_REFUNDABLE


@pytest.mark.parametrize(
    ("remaining", "requested", "code"),
    [
        (1_000, Money(1_000, "EUR"), None),
        (1_000, None, None),
        (1_000, Money(1_001, "EUR"), ErrorCode.REFUND_EXCEEDS_CAPTURED),
        (0, None, ErrorCode.REFUND_EXCEEDS_CAPTURED),
        (0, Money(1, "EUR"), ErrorCode.REFUND_EXCEEDS_CAPTURED),
        (1_000, Money(100, "USD"), ErrorCode.CURRENCY_MISMATCH),
    ],
)
def test_amount_and_currency_rules(remaining, requested, code):
    error = refusal_for_refund(
        status=PaymentStatus.PARTIALLY_REFUNDED,
        payment_currency="EUR",
        remaining_minor=remaining,
        requested=requested,
    )
    assert (error.code if error else None) is code


def test_refunded_payments_still_count_as_paid_and_as_charged():
    assert PaymentStatus.REFUNDED.charge_outcome is PaymentStatus.SUCCEEDED
    assert PaymentStatus.PARTIALLY_REFUNDED.is_final
    assert PaymentStatus.REFUNDED in ALLOWED_TRANSITIONS[PaymentStatus.PARTIALLY_REFUNDED]
    refusal = refusal_for_new_payment([PaymentStatus.REFUNDED], new_attempt=True)
    assert refusal is not None
    assert refusal.code is ErrorCode.ORDER_ALREADY_PAID


@pytest.mark.parametrize("amount", [Money(123_456, "BHD"), None])
def test_refund_command_round_trip(amount):
    command = refund(amount=amount, reason=RefundReason.OTHER.value)
    decoded = MESSAGES.decode_any_command(MESSAGES.encode_refund(command))
    assert decoded == command


def test_the_command_topic_reader_tells_payments_from_refunds():
    payment = create_payment()
    assert MESSAGES.decode_any_command(MESSAGES.encode_command(payment)) == payment
    # A reader of payments only still refuses a refund, by its schema id.
    with pytest.raises(CodecError) as refused:
        MESSAGES.decode_command(MESSAGES.encode_refund(refund()))
    assert refused.value.reason == "unexpected_record"


def test_an_amount_without_currency_on_kafka_is_invalid():
    codec = AvroCodec(FileSchemaRegistry.bundled())
    data = codec.encode(
        REFUND_PAYMENT,
        {
            "idempotencyKey": "k",
            "paymentRequestId": PAYMENT_ID,
            "orderId": "o",
            "amount": Decimal("1.00"),
            "currency": None,
            "reason": None,
            "requestedAt": NOW,
        },
    )
    with pytest.raises(PaygateError) as refused:
        MESSAGES.decode_any_command(data)
    assert (refused.value.code, refused.value.param) == (ErrorCode.INVALID_REQUEST, "currency")


@pytest.mark.parametrize("known", [True, False])
def test_refund_result_round_trip(known):
    event = RefundResult(
        event_id=refund_event_id(refund().refund_id, RefundStatus.FAILED),
        refund_id=refund().refund_id,
        payment_request_id=PAYMENT_ID,
        order_id="order-1",
        status=RefundStatus.FAILED,
        currency="JPY" if known else None,
        amount_minor=500 if known else None,
        reason="duplicate",
        payment_status=PaymentStatus.PARTIALLY_REFUNDED if known else None,
        payment_refunded_minor=0 if known else None,
        provider="sandbox" if known else None,
        provider_reference=None,
        error=ErrorInfo(ErrorCode.REFUND_FAILED, "refused", decline_code="expired_card"),
        created_at=NOW,
        occurred_at=NOW,
    )
    assert MESSAGES.decode_any_result(MESSAGES.encode_refund_result(event)) == event


def test_refund_event_ids_are_stable_per_status():
    rid = refund().refund_id
    assert refund_event_id(rid, RefundStatus.PENDING) == refund_event_id(rid, RefundStatus.PENDING)
    assert refund_event_id(rid, RefundStatus.PENDING) != refund_event_id(
        rid, RefundStatus.SUCCEEDED
    )
