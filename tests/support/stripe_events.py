"""Stripe webhook events as Stripe posts them, signed as Stripe documents it.

The signature is computed here by hand, not by the SDK, from Stripe's "Verify webhook
signatures manually": ``Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of
"<t>.<raw body>" under the endpoint's secret>``. The SDK on paygate's side verifies it, so
a test that passes shows paygate accepts what Stripe sends, not only what the SDK makes.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Mapping
from typing import Any

SECRET = "whsec_paygate_tests_0123456789abcdef"
OTHER_SECRET = "whsec_someone_elses_endpoint_fedcba98"
API_VERSION = "2025-03-31.basil"

_ids = itertools.count(1)


def signature(body: bytes, secret: str = SECRET, *, at: int | None = None) -> str:
    """The ``Stripe-Signature`` header Stripe sends with ``body``, made at ``at`` (now)."""
    timestamp = int(time.time()) if at is None else at
    signed = f"{timestamp}.".encode() + body
    mac = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def payment_intent(
    attempt_key: str | None,
    *,
    status: str = "succeeded",
    amount: int = 1050,
    currency: str = "eur",
    intent_id: str = "pi_3Webhook0001",
    **fields: Any,
) -> dict[str, Any]:
    """A PaymentIntent as an event renders it; ``attempt_key`` None: one paygate did not
    make (no paygate metadata)."""
    metadata = {} if attempt_key is None else {"paygateAttemptKey": attempt_key}
    return {
        "id": intent_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": amount if status == "requires_capture" else 0,
        "amount_received": amount if status == "succeeded" else 0,
        "capture_method": "manual" if status == "requires_capture" else "automatic",
        "cancellation_reason": None,
        "created": int(time.time()),
        "currency": currency,
        "last_payment_error": None,
        "livemode": False,
        "metadata": metadata,
        "status": status,
        **fields,
    }


def failed_refund(
    refund_id: str | None,
    stripe_id: str,
    *,
    amount: int = 1050,
    currency: str = "eur",
    intent_id: str = "pi_1",
    status: str = "failed",
    failure_reason: str | None = "expired_or_canceled_card",
    **fields: Any,
) -> dict[str, Any]:
    """A Refund as a ``refund.failed`` event renders it; ``refund_id`` None: one paygate did
    not make (no paygate metadata; paygate's carries its refund id and key)."""
    metadata = (
        {}
        if refund_id is None
        else {"paygateRefundId": refund_id, "paygateRefundKey": f"{refund_id}-key"}
    )
    return {
        "id": stripe_id,
        "object": "refund",
        "amount": amount,
        "currency": currency,
        "payment_intent": intent_id,
        "status": status,
        "failure_reason": failure_reason,
        "metadata": metadata,
        **fields,
    }


def event(
    event_type: str,
    data_object: Mapping[str, Any],
    *,
    livemode: bool = False,
    **fields: Any,
) -> bytes:
    """The body Stripe posts for ``event_type`` about ``data_object`` (a snapshot)."""
    number = next(_ids)
    body = {
        "id": f"evt_paygate{number:06d}",
        "object": "event",
        "api_version": API_VERSION,
        "created": int(time.time()),
        "data": {"object": dict(data_object)},
        "livemode": livemode,
        "pending_webhooks": 1,
        "request": {"id": f"req_paygate{number:06d}", "idempotency_key": None},
        "type": event_type,
        **fields,
    }
    return json.dumps(body, indent=2).encode()  # Stripe's bodies are pretty-printed


def headers(body: bytes, secret: str = SECRET, *, at: int | None = None) -> dict[str, str]:
    """What Stripe sends with ``body``."""
    return {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": signature(body, secret, at=at),
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
    }
