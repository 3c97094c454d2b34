"""Stripe's Refund and capture shapes as paygate sends and reads them, and the maps from
Stripe's refund statuses, reasons and refusal codes to paygate's. Pure: no I/O.

Refund status -> what paygate records::

    succeeded                   SUCCEEDED
    pending, requires_action    PENDING (ask again with refund_status)
    failed, canceled            FAILED, refund_failed with Stripe's failure_reason
    a status Stripe adds later  PENDING: not known to be final, so never recorded failed
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final, Literal

import stripe
from stripe.params import PaymentIntentCaptureParams, RefundCreateParams

from domain.errors import ErrorCode, PaygateError
from domain.refunds import RefundReason
from providers.errors import ProviderError
from providers.port import CaptureRequest, ProviderRefundStatus, RefundOutcome, RefundRequest
from providers.stripe.amounts import to_stripe_amount
from providers.stripe.transformers import PAYMENT_REQUEST_ID_KEY, error_from_stripe

# Metadata on every Refund paygate creates; refund_status matches the refund key.
REFUND_KEY_METADATA_KEY: Final = "paygateRefundKey"
REFUND_ID_METADATA_KEY: Final = "paygateRefundId"

# Every status the SDK documents for a Refund; a unit test checks each entry.
REFUND_STATUSES: Final[Mapping[str, ProviderRefundStatus]] = MappingProxyType(
    {
        "succeeded": ProviderRefundStatus.SUCCEEDED,
        "pending": ProviderRefundStatus.PENDING,
        # Stripe waits for the customer (e.g. bank details); not final yet.
        "requires_action": ProviderRefundStatus.PENDING,
        "failed": ProviderRefundStatus.FAILED,
        "canceled": ProviderRefundStatus.FAILED,
    }
)
UNKNOWN_REFUND_STATUS: Final = ProviderRefundStatus.PENDING

# paygate's reason -> Stripe's. ``other`` has no Stripe counterpart: no reason is sent.
_StripeReason = Literal["requested_by_customer", "duplicate", "fraudulent"]
REFUND_REASONS: Final[Mapping[RefundReason, _StripeReason | None]] = MappingProxyType(
    {
        RefundReason.REQUESTED_BY_CUSTOMER: "requested_by_customer",
        RefundReason.DUPLICATE: "duplicate",
        RefundReason.FRAUDULENT: "fraudulent",
        RefundReason.OTHER: None,
    }
)

# Codes of an invalid refund request that say something about the payment, so paygate can
# refuse the refund with a catalogue code. Anything else goes through error_from_stripe.
REFUND_REQUEST_ERROR_CODES: Final[Mapping[str, ErrorCode]] = MappingProxyType(
    {
        "charge_already_refunded": ErrorCode.REFUND_EXCEEDS_CAPTURED,
        "amount_too_large": ErrorCode.REFUND_EXCEEDS_CAPTURED,
        "charge_disputed": ErrorCode.PAYMENT_NOT_REFUNDABLE,
        "payment_intent_unexpected_state": ErrorCode.PAYMENT_NOT_REFUNDABLE,
        "resource_missing": ErrorCode.PAYMENT_NOT_REFUNDABLE,
    }
)


def refund_params(request: RefundRequest) -> RefundCreateParams:
    """Raises StripeAmountError (``invalid_amount``) for an amount Stripe cannot take."""
    params: RefundCreateParams = {
        "payment_intent": request.charge_reference,
        "amount": to_stripe_amount(request.amount),
        "metadata": {
            REFUND_KEY_METADATA_KEY: request.refund_key,
            REFUND_ID_METADATA_KEY: request.refund_id,
            PAYMENT_REQUEST_ID_KEY: request.payment_request_id,
        },
    }
    reason = None if request.reason is None else REFUND_REASONS[request.reason]
    if reason is not None:
        params["reason"] = reason
    return params


def capture_params(request: CaptureRequest) -> PaymentIntentCaptureParams:
    """Raises StripeAmountError (``invalid_amount``) for an amount Stripe cannot take."""
    return {"amount_to_capture": to_stripe_amount(request.amount)}


def _field(obj: object, name: str) -> Any:
    return getattr(obj, name, None)


def outcome_from_refund(refund: stripe.Refund) -> RefundOutcome:
    """Raises ValueError if the Refund lacks an id."""
    refund_id = _field(refund, "id")
    if not isinstance(refund_id, str) or not refund_id:
        raise ValueError("the Refund has no id")
    status = REFUND_STATUSES.get(_field(refund, "status") or "", UNKNOWN_REFUND_STATUS)
    if status is not ProviderRefundStatus.FAILED:
        return RefundOutcome(status, refund_id)
    reason = _field(refund, "failure_reason")
    error = PaygateError(
        ErrorCode.REFUND_FAILED,
        f"Stripe failed the refund ({reason or _field(refund, 'status')})",
        decline_code=reason,
    )
    return RefundOutcome(status, refund_id, error)


def find_refund(refunds: Iterable[stripe.Refund], refund_key: str) -> stripe.Refund | None:
    """The refund paygate created under ``refund_key``, by its metadata."""
    for refund in refunds:
        try:
            # A StripeObject: indexing, since it refuses dict methods such as get().
            key = _field(refund, "metadata")[REFUND_KEY_METADATA_KEY]
        except (KeyError, TypeError):
            continue
        if key == refund_key:
            return refund
    return None


def refund_error_from_stripe(exc: stripe.StripeError) -> ProviderError | PaygateError:
    """Like error_from_stripe, with the refusals that are about the payment first."""
    if isinstance(exc, stripe.InvalidRequestError):
        known = REFUND_REQUEST_ERROR_CODES.get(exc.code or "")
        if known is not None:
            return PaygateError(known, exc.user_message or "Stripe refused the refund")
    return error_from_stripe(exc)
