"""Translation between Avro records and the refund command and refund result event."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from domain.currencies import minor_unit_exponent
from domain.errors import ErrorCode, PaygateError
from domain.events import RefundResult
from domain.money import money_from_decimal
from domain.refunds import RefundPayment, RefundStatus
from domain.status import PaymentStatus
from schemas.error_records import error_from_record, error_to_record
from schemas.fields import requested_at_of


def refund_payment_from_record(record: Mapping[str, Any]) -> RefundPayment:
    amount = record.get("amount")
    currency = record.get("currency")
    money = None
    if amount is not None:
        if currency is None:
            raise PaygateError(
                ErrorCode.INVALID_REQUEST, "currency is required with amount", param="currency"
            )
        money = money_from_decimal(amount, currency)
    return RefundPayment.create(
        idempotency_key=record["idempotencyKey"],
        payment_request_id=record["paymentRequestId"],
        order_id=record["orderId"],
        amount=money,
        reason=record.get("reason"),
        requested_at=requested_at_of(record),
        # Absent from v1 records: the resolver fills the default, null (upstream scope).
        client_id=record.get("clientId"),
    )


def refund_payment_to_record(command: RefundPayment) -> dict[str, Any]:
    return {
        "idempotencyKey": command.idempotency_key,
        "paymentRequestId": command.payment_request_id,
        "orderId": command.order_id,
        "amount": None if command.amount is None else command.amount.to_decimal(),
        "currency": None if command.amount is None else command.amount.currency,
        "reason": None if command.reason is None else command.reason.value,
        "requestedAt": command.requested_at,
        "clientId": command.client_id,
    }


def _major(minor: int | None, currency: str | None) -> Decimal | None:
    if minor is None or currency is None:
        return None
    exponent = minor_unit_exponent(currency)
    assert exponent is not None, currency
    return Decimal(minor).scaleb(-exponent)


def _minor(amount: Decimal | None, currency: str | None) -> int | None:
    if amount is None or currency is None:
        return None
    exponent = minor_unit_exponent(currency)
    if exponent is None:
        raise PaygateError(ErrorCode.UNSUPPORTED_CURRENCY, f"unknown currency {currency!r}")
    return int(amount.scaleb(exponent))


def refund_result_to_record(event: RefundResult) -> dict[str, Any]:
    return {
        "eventId": event.event_id,
        "refundId": event.refund_id,
        "paymentRequestId": event.payment_request_id,
        "orderId": event.order_id,
        "status": event.status.value,
        "amount": _major(event.amount_minor, event.currency),
        "currency": event.currency,
        "reason": event.reason,
        "paymentStatus": None if event.payment_status is None else event.payment_status.value,
        "paymentRefundedAmount": _major(event.payment_refunded_minor, event.currency),
        "provider": event.provider,
        "providerReference": event.provider_reference,
        "error": error_to_record(event.error),
        "createdAt": event.created_at,
        "occurredAt": event.occurred_at,
        "refusal": event.refusal,
    }


def refund_result_from_record(record: Mapping[str, Any]) -> RefundResult:
    currency = record.get("currency")
    payment_status = record.get("paymentStatus")
    return RefundResult(
        event_id=record["eventId"],
        refund_id=record["refundId"],
        payment_request_id=record["paymentRequestId"],
        order_id=record["orderId"],
        status=RefundStatus(record["status"]),
        currency=currency,
        amount_minor=_minor(record.get("amount"), currency),
        reason=record.get("reason"),
        payment_status=None if payment_status is None else PaymentStatus(payment_status),
        payment_refunded_minor=_minor(record.get("paymentRefundedAmount"), currency),
        provider=record.get("provider"),
        provider_reference=record.get("providerReference"),
        error=error_from_record(record.get("error")),
        created_at=record["createdAt"],
        occurred_at=record["occurredAt"],
        # Absent from v1 events: read as false here; see PaymentMessages for their rule.
        refusal=bool(record.get("refusal", False)),
    )
