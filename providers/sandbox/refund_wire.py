"""The sandbox service's JSON for refunds and captures: request bodies in, rows out.

Refund and capture bodies hold no account data; validation still names the field rather
than repeat a value, as :mod:`providers.sandbox.wire` does for charges.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from domain.refunds import RefundReason
from providers.sandbox.refund_records import (
    RefundRecord,
    SandboxCaptureParams,
    SandboxRefundParams,
)
from providers.sandbox.wire import REFERENCE, amount_from, invalid

_REFUND_FIELDS: Final = frozenset(
    {"chargeId", "amountMinor", "currency", "refundReference", "paymentReference", "reason"}
)
_CAPTURE_FIELDS: Final = frozenset({"amountMinor", "currency"})


def _object(body: object, fields: frozenset[str]) -> Mapping[str, object]:
    if not isinstance(body, Mapping):
        raise invalid("the body must be a JSON object", "body")
    unknown = set(body) - fields
    if unknown:
        raise invalid(f"unknown fields: {', '.join(sorted(map(str, unknown)))}", "body")
    return body


def _reference(body: Mapping[str, object], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not REFERENCE.match(value):
        raise invalid(f"{name} must be 1 to 255 printable ASCII characters without spaces", name)
    return value


def _reason(value: object) -> RefundReason | None:
    if value is None:
        return None
    try:
        return RefundReason(str(value))
    except ValueError:
        reasons = ", ".join(reason.value for reason in RefundReason)
        raise invalid(f"reason must be null or one of: {reasons}", "reason") from None


def parse_refund_body(body: object) -> SandboxRefundParams:
    """Validate a ``POST /v1/refunds`` body; raises PaygateError naming the field."""
    fields = _object(body, _REFUND_FIELDS)
    return SandboxRefundParams(
        charge_id=_reference(fields, "chargeId"),
        amount=amount_from(fields),
        refund_reference=_reference(fields, "refundReference"),
        payment_reference=_reference(fields, "paymentReference"),
        reason=_reason(fields.get("reason")),
    )


def parse_capture_body(charge_id: str, body: object) -> SandboxCaptureParams:
    """Validate a ``POST /v1/charges/{chargeId}/capture`` body."""
    return SandboxCaptureParams(
        charge_id=charge_id, amount=amount_from(_object(body, _CAPTURE_FIELDS))
    )


def refund_json(record: RefundRecord) -> dict[str, object]:
    """A refund as ``POST /v1/refunds`` and ``GET /v1/refunds/{key}`` answer it."""
    return {
        "id": record.refund_id,
        "status": record.status.value,
        "errorCode": None if record.error_code is None else record.error_code.value,
        "message": record.message,
        "chargeId": record.charge_id,
        "amountMinor": record.amount_minor,
        "currency": record.currency,
        "refundReference": record.refund_reference,
        "paymentReference": record.payment_reference,
        "reason": None if record.reason is None else record.reason.value,
    }


def admin_refund_json(record: RefundRecord) -> dict[str, object]:
    """A refund row for ``GET /admin/refunds``: the refund plus its key and times."""
    return {
        **refund_json(record),
        "idempotencyKey": record.idempotency_key,
        "createdAt": record.created_at.isoformat(),
        "settlesAt": None if record.settles_at is None else record.settles_at.isoformat(),
    }
