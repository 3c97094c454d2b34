"""Response bodies: domain views -> JSON-ready dicts, in the API's camelCase.

Accounts appear only masked (``****4242``); the view never holds a clear number, and
nothing here could put one back.
"""

from __future__ import annotations

from datetime import UTC, datetime

from domain.accounts import AccountRef
from domain.payment import PaymentView
from domain.status import PaymentStatus


def accepted_body(payment_request_id: str) -> dict[str, object]:
    """What a 202 says: the command is on its way; its outcome is not known yet."""
    return {
        "paymentRequestId": payment_request_id,
        "status": PaymentStatus.PENDING.value,
        "paymentResult": False,
        "error": None,
    }


def payment_body(view: PaymentView) -> dict[str, object]:
    return {
        "paymentRequestId": view.payment_request_id,
        "orderId": view.order_id,
        "userId": view.user_id,
        "status": view.status.value,
        "paymentResult": view.payment_result,
        # Fixed-point text with exactly the currency's decimals ("10.50", "1000", "1.234"):
        # format "f" never switches to an exponent, which str(Decimal) may.
        "amount": format(view.amount.to_decimal(), "f"),
        "currency": view.amount.currency,
        "paymentMethod": view.payment_method.value,
        "payerAccount": _account(view.payer),
        "payeeAccount": _account(view.payee),
        "provider": view.provider,
        "providerReference": view.provider_reference,
        "error": view.error.to_dict() if view.error is not None else None,
        "createdAt": _utc_text(view.created_at),
        "updatedAt": _utc_text(view.updated_at),
    }


def _account(ref: AccountRef) -> dict[str, object]:
    return {"type": ref.type.value, "number": ref.masked}


def _utc_text(moment: datetime) -> str:
    # SQLite hands back naive datetimes even for timezone-aware columns; paygate stores
    # UTC only, so a naive value is UTC, not local time.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
