"""The sandbox service's JSON: reading a charge request body, writing charges and errors.

Validation errors name the offending field but never repeat its value, since the value may
be a real account number sent to the sandbox by mistake.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from domain.accounts import Account
from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.payments import PaymentMethod
from providers.sandbox.records import ChargeRecord, SandboxChargeParams, SandboxStatus
from providers.sandbox.transformers import IN_PROCESS_BASE_URL, action_url

REFERENCE: Final = re.compile(r"\A[\x21-\x7e]{1,255}\Z")
_FIELDS: Final = frozenset(
    {
        "amountMinor",
        "currency",
        "paymentReference",
        "paymentMethod",
        "payerAccount",
        "payeeAccount",
        "capture",
    }
)


def invalid(message: str, param: str) -> PaygateError:
    return PaygateError(ErrorCode.INVALID_REQUEST, message, param=param)


def _account(body: Mapping[str, object], param: str) -> Account:
    value = body.get(param)
    if not isinstance(value, Mapping):
        raise invalid(f"{param} must be an object with type and number", param)
    unknown = set(value) - {"type", "number"}
    if unknown:
        raise invalid(f"{param} has unknown fields: {', '.join(sorted(unknown))}", param)
    return Account.parse(value.get("type"), value.get("number"), param=param)


def amount_from(body: Mapping[str, object]) -> Money:
    """``amountMinor`` and ``currency`` of a body, as Money; raises PaygateError naming them."""
    amount = body.get("amountMinor")
    # bool is an int in Python, and true is not an amount.
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise invalid("amountMinor must be an integer number of minor units", "amountMinor")
    currency = body.get("currency")
    if not isinstance(currency, str):
        raise PaygateError(
            ErrorCode.UNSUPPORTED_CURRENCY, "currency must be a string", param="currency"
        )
    try:
        return Money(amount, currency)
    except PaygateError as exc:
        param = "amountMinor" if exc.param == "amount" else exc.param
        raise PaygateError(exc.code, exc.message, param=param) from None


def parse_charge_body(body: object) -> SandboxChargeParams:
    """Validate a ``POST /v1/charges`` body; raises :class:`PaygateError` naming the field."""
    if not isinstance(body, Mapping):
        raise invalid("the body must be a JSON object", "body")
    unknown = set(body) - _FIELDS
    if unknown:
        raise invalid(f"unknown fields: {', '.join(sorted(map(str, unknown)))}", "body")
    reference = body.get("paymentReference")
    if not isinstance(reference, str) or not REFERENCE.match(reference):
        raise invalid(
            "paymentReference must be 1 to 255 printable ASCII characters without spaces",
            "paymentReference",
        )
    try:
        method = PaymentMethod(str(body.get("paymentMethod")))
    except ValueError:
        raise invalid(
            f"paymentMethod must be one of: {', '.join(m.value for m in PaymentMethod)}",
            "paymentMethod",
        ) from None
    capture = body.get("capture", True)
    if not isinstance(capture, bool):
        raise invalid("capture must be true or false", "capture")
    return SandboxChargeParams(
        amount=amount_from(body),
        payment_reference=reference,
        payment_method=method,
        payer=_account(body, "payerAccount"),
        payee=_account(body, "payeeAccount"),
        capture=capture,
    )


def charge_json(
    record: ChargeRecord,
    base_url: str = IN_PROCESS_BASE_URL,
    *,
    refunded_minor: int | None = None,
) -> dict[str, object]:
    """A charge as ``POST /v1/charges`` and ``GET /v1/charges/{key}`` answer it;
    ``base_url`` is the service's own, where a payer completes a charge's action.
    ``refunded_minor``: what its refunds return, answered by ``GET
    /v1/charges/by-id/{id}`` only (``refundedMinor``; null elsewhere)."""
    next_action = None
    if record.status is SandboxStatus.REQUIRES_ACTION and record.action_expires_at is not None:
        next_action = {
            "type": "redirect_url",
            "url": action_url(base_url, record.charge_id),
            "expiresAt": record.action_expires_at.isoformat(),
        }
    return {
        "id": record.charge_id,
        "status": record.status.value,
        "errorCode": None if record.error_code is None else record.error_code.value,
        "declineCode": record.decline_code,
        "message": record.message,
        "amountMinor": record.amount_minor,
        "currency": record.currency,
        "paymentReference": record.payment_reference,
        "capturedMinor": record.captured_minor,
        "refundedMinor": refunded_minor,
        "nextAction": next_action,
    }


def admin_charge_json(record: ChargeRecord) -> dict[str, object]:
    """A ledger row for ``GET /admin/charges``: the charge plus its key, masked payer, time."""
    return {
        **charge_json(record),
        "idempotencyKey": record.idempotency_key,
        "payerMasked": record.payer_masked,
        "createdAt": record.created_at.isoformat(),
        "refundBehaviour": record.refunds.value,
        "captureKey": record.capture_key,
    }


def error_json(
    code: ErrorCode | str, message: str, param: str | None = None
) -> dict[str, dict[str, str]]:
    error = {"code": str(code), "message": message}
    if param is not None:
        error["param"] = param
    return {"error": error}
