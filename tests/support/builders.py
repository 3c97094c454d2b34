"""Builders for valid commands and messages; tests change only what they are about."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from domain.accounts import Account, AccountType
from domain.money import Money
from domain.payments import CreatePayment, PaymentMethod
from schemas.codec import CAPTURE_PAYMENT, CREATE_PAYMENT, REFUND_PAYMENT, AvroCodec
from schemas.registry import FileSchemaRegistry

# Re-exported: tests take sandbox account numbers from here (their source is
# providers/sandbox/accounts.py, see tests.support.sandbox_accounts).
from tests.support.sandbox_accounts import (
    DECLINED_CARD,
    FRAUD_CARD,
    INSUFFICIENT_FUNDS_CARD,
    INVALID_ACCOUNT_CARD,
    PAYEE_IBAN,
    PAYER_ACTION_CARD,
    REFUNDS_FAIL_CARD,
    REFUNDS_PENDING_CARD,
    SLOW_CARD,
    SUCCESS_CARD,
    TIMEOUT_CARD,
    TIMEOUT_THEN_DECLINE_CARD,
    UNAVAILABLE_CARD,
    UNAVAILABLE_ONCE_CARD,
)

_CODEC = AvroCodec(FileSchemaRegistry.bundled())

# The key the tests' stores and handlers fingerprint account numbers with: a test that
# begins a payment itself must use the handler's key for a redelivery to be the same payment.
ACCOUNT_KEY = b"test-fingerprint-key"

__all__ = [
    "ACCOUNT_KEY",
    "DECLINED_CARD",
    "FRAUD_CARD",
    "INSUFFICIENT_FUNDS_CARD",
    "INVALID_ACCOUNT_CARD",
    "PAYEE_IBAN",
    "PAYER_ACTION_CARD",
    "REFUNDS_FAIL_CARD",
    "REFUNDS_PENDING_CARD",
    "SLOW_CARD",
    "SUCCESS_CARD",
    "TIMEOUT_CARD",
    "TIMEOUT_THEN_DECLINE_CARD",
    "UNAVAILABLE_CARD",
    "UNAVAILABLE_ONCE_CARD",
    "capture_payment_record",
    "create_payment",
    "create_payment_record",
    "encoded_capture",
    "encoded_command",
    "encoded_refund",
    "refund_payment_record",
    "unexpected_refusal",
    "unique",
]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def create_payment(
    *,
    payer_number: str = SUCCESS_CARD,
    amount: Money | None = None,
    order_id: str | None = None,
    idempotency_key: str | None = None,
    user_id: str = "user-1",
) -> CreatePayment:
    return CreatePayment.create(
        idempotency_key=idempotency_key or unique("key"),
        user_id=user_id,
        order_id=order_id or unique("order"),
        amount=amount or Money(1050, "EUR"),
        payment_method=PaymentMethod.CARD,
        payer=Account(AccountType.CARD, payer_number),
        payee=Account(AccountType.IBAN, PAYEE_IBAN),
        requested_at=datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
        metadata={"source": "test"},
    )


def alipay_payment(yuan_fen: int) -> CreatePayment:
    """A payment by Alipay of ``yuan_fen`` fen (CNY), between two sandbox Alipay accounts."""
    return dataclasses.replace(
        create_payment(amount=Money(yuan_fen, "CNY")),
        payment_method=PaymentMethod.ALIPAY,
        payer=Account(AccountType.WALLET, "2088102177846880"),
        payee=Account(AccountType.WALLET, "2088621955183730"),
    )


def create_payment_record(**overrides: Any) -> dict[str, Any]:
    """A valid CreatePayment Avro record (as plain aiokafka producers would send it)."""
    record: dict[str, Any] = {
        "idempotencyKey": unique("key"),
        "userId": "user-1",
        "orderId": unique("order"),
        "amount": Decimal("10.50"),
        "currency": "EUR",
        "paymentMethod": "card",
        "payerAccount": {"type": "card", "number": SUCCESS_CARD, "holderName": None},
        "payeeAccount": {"type": "iban", "number": PAYEE_IBAN, "holderName": None},
        "metadata": {},
        "requestedAt": datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
    }
    record.update(overrides)
    return record


def unexpected_refusal(_command: object, error: object, _created_at: object) -> Any:
    """A ``refusal_event`` for store tests that never expect order protection to refuse."""
    raise AssertionError(f"order protection refused unexpectedly: {error!r}")


def encoded_command(**overrides: Any) -> tuple[bytes, bytes, dict[str, Any]]:
    """(Kafka key, wire-format bytes, record) of a valid CreatePayment, keyed by order id."""
    record = create_payment_record(**overrides)
    return record["orderId"].encode(), _CODEC.encode(CREATE_PAYMENT, record), record


def refund_payment_record(**overrides: Any) -> dict[str, Any]:
    """A valid RefundPayment Avro record, for all that remains of a payment."""
    record: dict[str, Any] = {
        "idempotencyKey": unique("refund"),
        "paymentRequestId": "pay_" + uuid.uuid4().hex,
        "orderId": unique("order"),
        "amount": None,
        "currency": None,
        "reason": "requested_by_customer",
        "requestedAt": datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
    }
    record.update(overrides)
    return record


def capture_payment_record(**overrides: Any) -> dict[str, Any]:
    """A valid CapturePayment Avro record."""
    record: dict[str, Any] = {
        "paymentRequestId": "pay_" + uuid.uuid4().hex,
        "orderId": unique("order"),
        "requestedAt": datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
    }
    record.update(overrides)
    return record


def encoded_refund(**overrides: Any) -> bytes:
    """Wire-format bytes of :func:`refund_payment_record`."""
    return _CODEC.encode(REFUND_PAYMENT, refund_payment_record(**overrides))


def encoded_capture(**overrides: Any) -> bytes:
    """Wire-format bytes of :func:`capture_payment_record`."""
    return _CODEC.encode(CAPTURE_PAYMENT, capture_payment_record(**overrides))
