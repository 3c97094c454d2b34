"""Webhook events: what a REST client's endpoint receives when a result event is written.

Every result event (payment or refund) becomes exactly one webhook event, built here from
the same :class:`domain.events.PaymentResult` / :class:`domain.events.RefundResult` that
goes to the results topic. Invariants:

* The **type** is ``<object>.<status>`` (``payment.succeeded``, ``refund.failed``), derived
  from the status enum, so a status added to :class:`domain.status.PaymentStatus` (say
  ``requires_action`` or ``expired``) is a webhook type without any change here.
* The **id** is derived from the result event's id, which is stable per (payment, status),
  so a re-published result produces the same webhook id and receivers dedupe on it
  (Standard Webhooks' ``webhook-id``).
* A **reply to a refused command** (``refusal``: the key was reused with other parameters,
  error ``idempotency_conflict``) is not a change of the payment or refund it names, which
  may well have succeeded: it is no webhook (:func:`payment_webhook` and
  :func:`refund_webhook` answer None). Kafka readers still get it on the results topic, as
  the reply to their command. A payment or refund that itself failed with that error code
  (a provider refusing a reused key) did change: it is a webhook like any failure.
* The **body** follows Standard Webhooks' payload structure ``{type, timestamp, data}`` and
  is serialised once, when a delivery of the event is queued (in the transaction that
  writes the result event), and only then: every attempt, and every re-send, signs and
  sends the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

from domain.currencies import minor_unit_exponent
from domain.events import PaymentResult, RefundResult
from domain.refunds import RefundStatus
from domain.status import PaymentStatus

PAYMENT_PREFIX: Final = "payment."
REFUND_PREFIX: Final = "refund."
# An endpoint that enables this receives every type, those added later included.
ALL_EVENTS: Final = "*"


def event_types() -> frozenset[str]:
    """Every webhook type there is: one per payment status and one per refund status."""
    return frozenset(
        [f"{PAYMENT_PREFIX}{status.value}" for status in PaymentStatus]
        + [f"{REFUND_PREFIX}{status.value}" for status in RefundStatus]
    )


def webhook_event_id(result_event_id: str) -> str:
    """The webhook id of the result event ``result_event_id``: stable, so receivers dedupe."""
    return f"evt_{result_event_id.replace('-', '')}"


class WebhookEvent:
    """One event for the endpoints of the client that owns ``payment_request_id``.

    The body is given as text or as a function that renders it; a rendered body is kept,
    so it is rendered at most once and every read returns the same text. It is rendered
    lazily because most result events go to no endpoint (a payment from an upstream
    service has no client, a client may have no endpoint), and rendering it (a JSON
    document with its timestamps and amount) was about 2 % of the consumer's CPU per
    payment (docs/performance.md). It is still rendered in the transaction that queues the
    delivery, so every attempt and re-send signs the same bytes.
    """

    __slots__ = ("_body", "_render", "event_id", "payment_request_id", "type")

    def __init__(
        self,
        event_id: str,
        type: str,
        payment_request_id: str,
        body: str | None = None,
        *,
        render: Callable[[], str] | None = None,
    ) -> None:
        if (body is None) == (render is None):
            raise ValueError("a webhook event needs exactly one of body and render")
        self.event_id = event_id
        self.type = type
        self.payment_request_id = payment_request_id
        self._body = body
        self._render = render

    @property
    def body(self) -> str:
        if self._body is None:
            assert self._render is not None  # exactly one is set, see __init__
            self._body = self._render()
            self._render = None
        return self._body

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WebhookEvent):
            return NotImplemented
        return (self.event_id, self.type, self.payment_request_id, self.body) == (
            other.event_id,
            other.type,
            other.payment_request_id,
            other.body,
        )

    def __hash__(self) -> int:
        return hash((self.event_id, self.type, self.payment_request_id))

    def __repr__(self) -> str:
        return (
            f"WebhookEvent(event_id={self.event_id!r}, type={self.type!r}, "
            f"payment_request_id={self.payment_request_id!r})"
        )


def subscribed(enabled_events: list[str], event_type: str) -> bool:
    """Whether an endpoint with ``enabled_events`` receives events of ``event_type``."""
    return ALL_EVENTS in enabled_events or event_type in enabled_events


def payment_webhook(result: PaymentResult) -> WebhookEvent | None:
    if result.refusal:
        return None
    event_type = f"{PAYMENT_PREFIX}{result.status.value}"
    return WebhookEvent(
        webhook_event_id(result.event_id),
        event_type,
        result.payment_request_id,
        render=lambda: _body(event_type, result.occurred_at, _payment_data(result)),
    )


def _payment_data(result: PaymentResult) -> dict[str, object]:
    amount = result.amount
    # What the capture took, as REST's capturedAmount says it: a partial capture (by
    # paygate, or by hand at the provider) would otherwise read as all of ``amount`` taken.
    captured = result.captured_amount
    return {
        "object": "payment",
        "paymentRequestId": result.payment_request_id,
        "orderId": result.order_id,
        "userId": result.user_id,
        "status": result.status.value,
        "paymentResult": result.payment_result,
        "amount": _amount_text(amount.minor_units, amount.exponent),
        "currency": amount.currency,
        "provider": result.provider,
        "providerReference": result.provider_reference,
        "error": None if result.error is None else result.error.to_dict(),
        "createdAt": _utc_text(result.created_at),
        "capturedAmount": (
            None if captured is None else _amount_text(captured.minor_units, captured.exponent)
        ),
    }


def refund_webhook(result: RefundResult) -> WebhookEvent | None:
    if result.refusal:
        return None
    event_type = f"{REFUND_PREFIX}{result.status.value}"
    return WebhookEvent(
        webhook_event_id(result.event_id),
        event_type,
        result.payment_request_id,
        render=lambda: _body(event_type, result.occurred_at, _refund_data(result)),
    )


def _refund_data(result: RefundResult) -> dict[str, object]:
    # None for a refund of a payment that does not exist: nothing is known of its amount.
    exponent = None if result.currency is None else minor_unit_exponent(result.currency)
    amount = (
        None
        if result.amount_minor is None or exponent is None
        else _amount_text(result.amount_minor, exponent)
    )
    refunded = (
        None
        if result.payment_refunded_minor is None or exponent is None
        else _amount_text(result.payment_refunded_minor, exponent)
    )
    return {
        "object": "refund",
        "refundId": result.refund_id,
        "paymentRequestId": result.payment_request_id,
        "orderId": result.order_id,
        "status": result.status.value,
        "amount": amount,
        "currency": result.currency,
        "reason": result.reason,
        "paymentStatus": None if result.payment_status is None else result.payment_status.value,
        "paymentRefundedAmount": refunded,
        "providerReference": result.provider_reference,
        "error": None if result.error is None else result.error.to_dict(),
        "createdAt": _utc_text(result.created_at),
    }


def _body(event_type: str, occurred_at: datetime, data: dict[str, object]) -> str:
    body = {"type": event_type, "timestamp": _utc_text(occurred_at), "data": data}
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def _amount_text(minor_units: int, exponent: int) -> str:
    # As the REST API writes amounts: fixed point, exactly the currency's decimals.
    return format(Decimal(minor_units).scaleb(-exponent), "f")


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
