"""Response bodies: domain views -> JSON-ready dicts, in the API's camelCase.

Accounts appear only masked (``****4242``); the view never holds a clear number, and
nothing here could put one back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from domain.accounts import AccountRef
from domain.money import Money
from domain.next_action import NextAction, NextActionType
from domain.payment_view import PaymentView
from domain.refund_view import RefundView
from domain.refunds import RefundStatus
from domain.status import CAPTURED, PaymentStatus


def accepted_body(payment_request_id: str) -> dict[str, object]:
    """What a 202 says: the command is on its way; its outcome is not known yet."""
    return {
        "paymentRequestId": payment_request_id,
        "status": PaymentStatus.PENDING.value,
        "paymentResult": False,
        "error": None,
    }


def payment_body(view: PaymentView, refunds: Sequence[RefundView]) -> dict[str, object]:
    """The payment with its refunds (oldest first) and what remains refundable."""
    return {
        "paymentRequestId": view.payment_request_id,
        "orderId": view.order_id,
        "userId": view.user_id,
        "status": view.status.value,
        "paymentResult": view.payment_result,
        "amount": _amount_text(view.amount.minor_units, view.amount),
        "currency": view.amount.currency,
        "capturedAmount": _captured_text(view),
        "refundedAmount": _amount_text(view.refunded_minor, view.amount),
        "refundableAmount": _amount_text(view.refundable_minor, view.amount),
        "paymentMethod": view.payment_method.value,
        "payerAccount": _account(view.payer),
        "payeeAccount": _account(view.payee),
        "provider": view.provider,
        "providerReference": view.provider_reference,
        "error": view.error.to_dict() if view.error is not None else None,
        "createdAt": _utc_text(view.created_at),
        "updatedAt": _utc_text(view.updated_at),
        "refunds": [refund_body(refund) for refund in refunds],
        "nextAction": next_action_body(view.next_action),
    }


def next_action_body(action: NextAction | None) -> dict[str, object] | None:
    """``{type, url | qrCode, expiresAt}``: only the target the type calls for is present."""
    if action is None:
        return None
    target = "url" if action.type is NextActionType.REDIRECT_URL else "qrCode"
    return {
        "type": action.type.value,
        target: action.target,
        "expiresAt": _utc_text(action.expires_at),
    }


def capture_accepted_body(payment_request_id: str) -> dict[str, object]:
    """What a 202 for a capture says: the payment is being captured."""
    return {
        "paymentRequestId": payment_request_id,
        "status": PaymentStatus.CAPTURING.value,
        "error": None,
    }


def cancel_accepted_body(payment_request_id: str) -> dict[str, object]:
    """What a 202 for a cancel says: the authorization is being voided."""
    return {
        "paymentRequestId": payment_request_id,
        "status": PaymentStatus.CANCELING.value,
        "error": None,
    }


def refund_accepted_body(refund_id: str, payment_request_id: str) -> dict[str, object]:
    """What a 202 for a refund says: on its way, outcome not known yet."""
    return {
        "refundId": refund_id,
        "paymentRequestId": payment_request_id,
        "status": RefundStatus.PROCESSING.value,
        "error": None,
    }


def refund_body(view: RefundView) -> dict[str, object]:
    amount = view.amount
    return {
        "refundId": view.refund_id,
        "paymentRequestId": view.payment_request_id,
        "orderId": view.order_id,
        "status": view.status.value,
        "amount": None if amount is None else _amount_text(amount.minor_units, amount),
        "currency": None if amount is None else amount.currency,
        "reason": None if view.reason is None else view.reason.value,
        "providerReference": view.provider_reference,
        "error": view.error.to_dict() if view.error is not None else None,
        "createdAt": _utc_text(view.created_at),
        "updatedAt": _utc_text(view.updated_at),
    }


def _amount_text(minor_units: int, like: Money) -> str:
    # Fixed-point text with exactly the currency's decimals ("10.50", "1000", "1.234"):
    # format "f" never switches to an exponent, which str(Decimal) may. Zero is allowed
    # here (nothing refunded yet), which Money itself refuses.
    return format(Decimal(minor_units).scaleb(-like.exponent), "f")


def _captured_text(view: PaymentView) -> str | None:
    """What the capture took (or is taking); None before any capture or without one."""
    if view.status is not PaymentStatus.CAPTURING and view.status not in CAPTURED:
        return None
    captured = view.captured_amount
    return _amount_text(captured.minor_units, captured)


def _account(ref: AccountRef) -> dict[str, object]:
    return {"type": ref.type.value, "number": ref.masked}


def _utc_text(moment: datetime) -> str:
    # SQLite hands back naive datetimes even for timezone-aware columns; paygate stores
    # UTC only, so a naive value is UTC, not local time.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
