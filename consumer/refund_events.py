"""Builds refund result events for the outbox."""

from __future__ import annotations

from datetime import datetime

from domain.events import RefundResult, refund_event_id
from domain.refund_view import RefundView
from domain.webhook_events import refund_webhook
from persistence.outbox import OutboxMessage
from persistence.refund_store import PaymentRefunds, RefundEventBuilder
from schemas.payments import PaymentMessages


class RefundEvents:
    def __init__(self, messages: PaymentMessages, topic: str) -> None:
        self._messages = messages
        self._topic = topic

    def at(self, occurred_at: datetime, event_id: str | None = None) -> RefundEventBuilder:
        """A builder for the store, which supplies the refund and its payment's standing."""

        def build(refund: RefundView, standing: PaymentRefunds | None) -> OutboxMessage:
            return self.event(refund, standing, occurred_at, event_id)

        return build

    def replayed(self, refund: RefundView, standing: PaymentRefunds | None) -> OutboxMessage:
        """A replay's event (a :data:`RefundEventBuilder`): the refund's own event id and
        time, so a reader that has it already drops it, with the standing as it is now."""
        return self.event(refund, standing, refund.updated_at)

    def event(
        self,
        refund: RefundView,
        standing: PaymentRefunds | None,
        occurred_at: datetime,
        event_id: str | None = None,
        *,
        refusal: bool = False,
    ) -> OutboxMessage:
        """``refusal``: the event answers a refused command and is no state of the refund
        (see :attr:`domain.events.RefundResult.refusal`)."""
        result = RefundResult(
            event_id=event_id or refund_event_id(refund.refund_id, refund.status),
            refund_id=refund.refund_id,
            payment_request_id=refund.payment_request_id,
            order_id=refund.order_id,
            status=refund.status,
            currency=None if refund.amount is None else refund.amount.currency,
            amount_minor=None if refund.amount is None else refund.amount.minor_units,
            reason=None if refund.reason is None else refund.reason.value,
            payment_status=None if standing is None else standing.status,
            payment_refunded_minor=None if standing is None else standing.refunded_minor,
            provider=refund.provider,
            provider_reference=refund.provider_reference,
            error=refund.error,
            created_at=refund.created_at,
            occurred_at=occurred_at,
            refusal=refusal,
        )
        return OutboxMessage(
            event_id=result.event_id,
            topic=self._topic,
            key=result.order_id,
            payload=self._messages.encode_refund_result(result),
            webhook=refund_webhook(result),
        )
