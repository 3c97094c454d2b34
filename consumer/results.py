"""Builds result events for the outbox from commands and stored payments."""

from __future__ import annotations

from datetime import datetime

from domain.commands import CreatePayment
from domain.error_info import ErrorInfo
from domain.events import PaymentResult, result_event_id
from domain.payment import PaymentView
from domain.status import PaymentStatus
from persistence.payment_store import OutboxMessage
from schemas.payments import PaymentMessages


class ResultEvents:
    def __init__(self, messages: PaymentMessages, topic: str) -> None:
        self._messages = messages
        self._topic = topic

    def for_command(
        self,
        command: CreatePayment,
        *,
        status: PaymentStatus,
        provider: str | None,
        provider_reference: str | None,
        error: ErrorInfo | None,
        created_at: datetime,
        occurred_at: datetime,
        event_id: str | None = None,
    ) -> OutboxMessage:
        payment_id = command.payment_request_id
        return self._message(
            PaymentResult(
                event_id=event_id or result_event_id(payment_id, status),
                payment_request_id=payment_id,
                order_id=command.order_id,
                user_id=command.user_id,
                status=status,
                amount=command.amount,
                provider=provider,
                provider_reference=provider_reference,
                error=error,
                created_at=created_at,
                occurred_at=occurred_at,
            )
        )

    def for_stored(self, payment: PaymentView) -> OutboxMessage:
        """The event of a stored payment's current state, with the same id as the first time."""
        return self._message(
            PaymentResult(
                event_id=result_event_id(payment.payment_request_id, payment.status),
                payment_request_id=payment.payment_request_id,
                order_id=payment.order_id,
                user_id=payment.user_id,
                status=payment.status,
                amount=payment.amount,
                provider=payment.provider,
                provider_reference=payment.provider_reference,
                error=payment.error,
                created_at=payment.created_at,
                occurred_at=payment.updated_at,
            )
        )

    def _message(self, event: PaymentResult) -> OutboxMessage:
        return OutboxMessage(
            event_id=event.event_id,
            topic=self._topic,
            key=event.order_id,
            payload=self._messages.encode_result(event),
        )
