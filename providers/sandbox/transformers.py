"""The sandbox's request and response shapes as paygate sends and reads them, and the map
from the sandbox's error codes to paygate's catalogue.

Used by both providers: the HTTP adapter builds and parses JSON, the in-process provider
builds parameters and reads ledger records directly; both end at the same
:class:`ChargeOutcome`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Final

from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.next_action import NextAction, NextActionType
from providers.port import (
    CaptureRequest,
    ChargeOutcome,
    ChargeRequest,
    ChargeStatus,
    ProviderRefundStatus,
    RefundOutcome,
    RefundRequest,
)
from providers.sandbox.records import ChargeRecord, SandboxChargeParams, SandboxErrorCode
from providers.sandbox.refund_records import (
    RefundRecord,
    SandboxCaptureParams,
    SandboxRefundErrorCode,
    SandboxRefundParams,
    SandboxRefundStatus,
)

PROVIDER_NAME: Final = "sandbox"

# Exhaustive over SandboxErrorCode (a unit test checks): a new sandbox code must be mapped
# here before it can reach paygate.
ERROR_CODES: Final[Mapping[SandboxErrorCode, ErrorCode]] = MappingProxyType(
    {
        SandboxErrorCode.CARD_DECLINED: ErrorCode.PAYMENT_DECLINED,
        SandboxErrorCode.INSUFFICIENT_FUNDS: ErrorCode.INSUFFICIENT_FUNDS,
        SandboxErrorCode.INVALID_ACCOUNT: ErrorCode.INVALID_ACCOUNT,
        SandboxErrorCode.SUSPECTED_FRAUD: ErrorCode.FRAUD_SUSPECTED,
    }
)

# A code we do not know still arrived on a declined charge: the payment is certainly not
# charged and retrying will not help, which is what a generic decline says.
UNKNOWN_ERROR_CODE: Final = ErrorCode.PAYMENT_DECLINED

# Exhaustive over SandboxStatus (a unit test checks).
_STATUSES: Final = MappingProxyType(
    {
        "succeeded": ChargeStatus.SUCCEEDED,
        "authorized": ChargeStatus.AUTHORIZED,
        "declined": ChargeStatus.DECLINED,
        "requires_action": ChargeStatus.REQUIRES_ACTION,
        "canceled": ChargeStatus.CANCELED,
        "expired": ChargeStatus.EXPIRED,
    }
)

# Where the payer completes a sandbox action, below the sandbox's base URL.
ACTION_PATH: Final = "/v1/actions/"
# The base of action URLs when no HTTP service is in between (the in-process sandbox):
# such a payer "completes" through SandboxAcquirer.complete_action, not a browser.
IN_PROCESS_BASE_URL: Final = "http://sandbox.invalid"

# Exhaustive over SandboxRefundStatus (a unit test checks).
REFUND_STATUSES: Final[Mapping[SandboxRefundStatus, ProviderRefundStatus]] = MappingProxyType(
    {
        SandboxRefundStatus.SUCCEEDED: ProviderRefundStatus.SUCCEEDED,
        SandboxRefundStatus.PENDING: ProviderRefundStatus.PENDING,
        SandboxRefundStatus.FAILED: ProviderRefundStatus.FAILED,
    }
)

# Exhaustive over SandboxRefundErrorCode. Every reason is a refund_failed for paygate; the
# sandbox's own reason travels as the error's decline_code.
REFUND_ERROR_CODES: Final[Mapping[SandboxRefundErrorCode, ErrorCode]] = MappingProxyType(
    {SandboxRefundErrorCode.REFUND_DECLINED: ErrorCode.REFUND_FAILED}
)
# A reason we do not know still came on a failed refund: nothing was returned.
UNKNOWN_REFUND_ERROR_CODE: Final = ErrorCode.REFUND_FAILED
_DEFAULT_REFUND_FAILURE_MESSAGE: Final = "the sandbox failed the refund"
_DEFAULT_DECLINE_MESSAGE: Final = "the sandbox declined the payment"


def error_code_from_sandbox(code: str | None) -> ErrorCode:
    try:
        return ERROR_CODES[SandboxErrorCode(code or "")]
    except ValueError:
        return UNKNOWN_ERROR_CODE


def refund_error_code_from_sandbox(code: str | None) -> ErrorCode:
    try:
        return REFUND_ERROR_CODES[SandboxRefundErrorCode(code or "")]
    except ValueError:
        return UNKNOWN_REFUND_ERROR_CODE


def charge_params(request: ChargeRequest) -> SandboxChargeParams:
    return SandboxChargeParams(
        amount=request.amount,
        payment_reference=request.payment_request_id,
        payment_method=request.payment_method,
        payer=request.payer,
        payee=request.payee,
        capture=request.capture,
    )


def capture_params(request: CaptureRequest) -> SandboxCaptureParams:
    return SandboxCaptureParams(charge_id=request.charge_reference, amount=request.amount)


def capture_body(request: CaptureRequest) -> dict[str, object]:
    """The JSON body of ``POST /v1/charges/{chargeId}/capture``."""
    return {"amountMinor": request.amount.minor_units, "currency": request.amount.currency}


def refund_params(request: RefundRequest) -> SandboxRefundParams:
    return SandboxRefundParams(
        charge_id=request.charge_reference,
        amount=request.amount,
        refund_reference=request.refund_id,
        payment_reference=request.payment_request_id,
        reason=request.reason,
    )


def refund_body(request: RefundRequest) -> dict[str, object]:
    """The JSON body of ``POST /v1/refunds``."""
    return {
        "chargeId": request.charge_reference,
        "amountMinor": request.amount.minor_units,
        "currency": request.amount.currency,
        "refundReference": request.refund_id,
        "paymentReference": request.payment_request_id,
        "reason": None if request.reason is None else request.reason.value,
    }


def charge_body(request: ChargeRequest) -> dict[str, object]:
    """The JSON body of ``POST /v1/charges``. It holds clear numbers: never log it."""
    body: dict[str, object] = {
        "amountMinor": request.amount.minor_units,
        "currency": request.amount.currency,
        "paymentReference": request.payment_request_id,
        "paymentMethod": request.payment_method.value,
        "payerAccount": {"type": request.payer.type.value, "number": request.payer.number},
        "payeeAccount": {"type": request.payee.type.value, "number": request.payee.number},
    }
    if not request.capture:
        body["capture"] = False
    return body


def _decline(code: str | None, message: str | None, decline_code: str | None) -> PaygateError:
    return PaygateError(
        error_code_from_sandbox(code),
        message or _DEFAULT_DECLINE_MESSAGE,
        decline_code=decline_code,
    )


def action_url(base_url: str, charge_id: str) -> str:
    """The page where the payer completes the action of ``charge_id``."""
    return base_url.rstrip("/") + ACTION_PATH + charge_id


def outcome_from_record(
    record: ChargeRecord, base_url: str = IN_PROCESS_BASE_URL, *, refunded_minor: int | None = None
) -> ChargeOutcome:
    """``base_url``: the sandbox's, to which the payer is sent for an action.
    ``refunded_minor``: what the charge's refunds return, when read (a read by reference)."""
    status = _STATUSES[record.status.value]
    if status is ChargeStatus.REQUIRES_ACTION:
        assert record.action_expires_at is not None  # recorded with every such charge
        action = NextAction.of(
            NextActionType.REDIRECT_URL,
            action_url(base_url, record.charge_id),
            record.action_expires_at,
        )
        return ChargeOutcome(status, record.charge_id, next_action=action)
    if status is ChargeStatus.SUCCEEDED:
        captured = Money(record.captured_minor, record.currency)
        # Nothing refunded is no amount: Money is positive.
        refunded = Money(refunded_minor, record.currency) if refunded_minor else None
        return ChargeOutcome(status, record.charge_id, captured=captured, refunded=refunded)
    if status is not ChargeStatus.DECLINED:
        return ChargeOutcome(status, record.charge_id)
    code = None if record.error_code is None else record.error_code.value
    return ChargeOutcome(
        status, record.charge_id, _decline(code, record.message, record.decline_code)
    )


def _optional_str(body: Mapping[str, object], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string or null")
    return value


def outcome_from_body(body: object) -> ChargeOutcome:
    """Parse a charge as the sandbox answers it; raises ValueError on an unexpected shape."""
    if not isinstance(body, Mapping):
        raise ValueError("the charge is not a JSON object")
    charge_id = body.get("id")
    if not isinstance(charge_id, str) or not charge_id:
        raise ValueError("the charge has no id")
    status = _STATUSES.get(str(body.get("status")))
    if status is None:
        raise ValueError("the charge has an unknown status")
    code = _optional_str(body, "errorCode")
    message = _optional_str(body, "message")
    decline_code = _optional_str(body, "declineCode")
    if status is ChargeStatus.REQUIRES_ACTION:
        return ChargeOutcome(status, charge_id, next_action=_next_action(body))
    if status is ChargeStatus.SUCCEEDED:
        return ChargeOutcome(
            status,
            charge_id,
            captured=_minor_amount(body, "capturedMinor"),
            # 0: nothing refunded, no amount.
            refunded=_minor_amount(body, "refundedMinor") if body.get("refundedMinor") else None,
        )
    if status is not ChargeStatus.DECLINED:
        return ChargeOutcome(status, charge_id)
    return ChargeOutcome(status, charge_id, _decline(code, message, decline_code))


def _minor_amount(body: Mapping[str, object], name: str) -> Money | None:
    """An amount of a succeeded charge in minor units: what it took (``capturedMinor``, less
    than its amount after a partial capture) or what its refunds return (``refundedMinor``,
    answered by a read by id); None from a sandbox that does not say. Raises ValueError on
    a bad value."""
    minor, currency = body.get(name), body.get("currency")
    if minor is None:
        return None
    if isinstance(minor, bool) or not isinstance(minor, int) or not isinstance(currency, str):
        raise ValueError(f"the charge's {name} or currency is malformed")
    try:
        return Money(minor, currency)
    except PaygateError as exc:
        raise ValueError(f"the charge's {name} is not an amount: {exc.message}") from exc


def _next_action(body: Mapping[str, object]) -> NextAction:
    action = body.get("nextAction")
    if not isinstance(action, Mapping):
        raise ValueError("a requires_action charge has no nextAction")
    url = _optional_str(action, "url")
    expires = _optional_str(action, "expiresAt")
    if action.get("type") != NextActionType.REDIRECT_URL.value or not url or not expires:
        raise ValueError("the charge's nextAction is not a redirect with an expiry")
    expires_at = datetime.fromisoformat(expires)
    if expires_at.tzinfo is None:
        raise ValueError("the charge's nextAction expiry has no time zone")
    return NextAction.of(NextActionType.REDIRECT_URL, url, expires_at)


def _refund_failure(code: str | None, message: str | None) -> PaygateError:
    return PaygateError(
        refund_error_code_from_sandbox(code),
        message or _DEFAULT_REFUND_FAILURE_MESSAGE,
        decline_code=code,
    )


def refund_outcome_from_record(record: RefundRecord) -> RefundOutcome:
    status = REFUND_STATUSES[record.status]
    if status is not ProviderRefundStatus.FAILED:
        return RefundOutcome(status, record.refund_id)
    code = None if record.error_code is None else record.error_code.value
    return RefundOutcome(status, record.refund_id, _refund_failure(code, record.message))


def refund_outcome_from_body(body: object) -> RefundOutcome:
    """Parse a refund as the sandbox answers it; raises ValueError on an unexpected shape."""
    if not isinstance(body, Mapping):
        raise ValueError("the refund is not a JSON object")
    refund_id = body.get("id")
    if not isinstance(refund_id, str) or not refund_id:
        raise ValueError("the refund has no id")
    try:
        status = REFUND_STATUSES[SandboxRefundStatus(str(body.get("status")))]
    except ValueError:
        raise ValueError("the refund has an unknown status") from None
    code = _optional_str(body, "errorCode")
    message = _optional_str(body, "message")
    if status is not ProviderRefundStatus.FAILED:
        return RefundOutcome(status, refund_id)
    return RefundOutcome(status, refund_id, _refund_failure(code, message))
