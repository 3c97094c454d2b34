"""Builds result events for the outbox."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain.error_info import ErrorInfo
from domain.events import PaymentResult, captured_in_event, result_event_id
from domain.money import Money
from domain.next_action import NextAction
from domain.payment_view import PaymentView
from domain.payments import CreatePayment
from domain.status import PaymentStatus
from domain.webhook_events import payment_webhook
from persistence.outbox import OutboxMessage
from schemas.payments import PaymentMessages


@dataclass(frozen=True, slots=True)
class PaymentFacts:
    """What every event of a payment repeats, whichever path produced the event."""

    payment_request_id: str
    order_id: str
    user_id: str
    amount: Money
    created_at: datetime
    # What a partial capture took (the stored payment's captured_minor); None: all of it.
    captured_minor: int | None = None

    @classmethod
    def of_command(cls, command: CreatePayment, created_at: datetime) -> PaymentFacts:
        return cls(
            command.payment_request_id,
            command.order_id,
            command.user_id,
            command.amount,
            created_at,
        )

    @classmethod
    def of_stored(cls, payment: PaymentView) -> PaymentFacts:
        return cls(
            payment.payment_request_id,
            payment.order_id,
            payment.user_id,
            payment.amount,
            payment.created_at,
            payment.captured_minor,
        )


class PaymentEvents:
    def __init__(self, messages: PaymentMessages, topic: str) -> None:
        self._messages = messages
        self._topic = topic

    def of_facts(
        self,
        facts: PaymentFacts,
        *,
        status: PaymentStatus,
        provider: str | None,
        provider_reference: str | None,
        error: ErrorInfo | None,
        occurred_at: datetime,
        event_id: str | None = None,
        next_action: NextAction | None = None,
        refusal: bool = False,
    ) -> OutboxMessage:
        """``refusal``: the event answers a refused command and is no state of the payment
        (see :attr:`domain.events.PaymentResult.refusal`)."""
        result = PaymentResult(
            event_id=event_id or result_event_id(facts.payment_request_id, status),
            payment_request_id=facts.payment_request_id,
            order_id=facts.order_id,
            user_id=facts.user_id,
            status=status,
            amount=facts.amount,
            provider=provider,
            provider_reference=provider_reference,
            error=error,
            created_at=facts.created_at,
            occurred_at=occurred_at,
            next_action=next_action,
            captured_amount=captured_in_event(status, facts.amount, facts.captured_minor),
            refusal=refusal,
        )
        return OutboxMessage(
            event_id=result.event_id,
            topic=self._topic,
            key=result.order_id,
            payload=self._messages.encode_result(result),
            webhook=payment_webhook(result),
        )

    def of_payment(
        self,
        payment: PaymentView,
        *,
        error: ErrorInfo | None = None,
        occurred_at: datetime | None = None,
        event_id: str | None = None,
    ) -> OutboxMessage:
        """The event of a stored payment's state; ``error`` (default: the stored one),
        ``occurred_at`` (default: its last update) and ``event_id`` may be given."""
        return self.of_facts(
            PaymentFacts.of_stored(payment),
            status=payment.status,
            provider=payment.provider,
            provider_reference=payment.provider_reference,
            error=payment.error if error is None else error,
            occurred_at=payment.updated_at if occurred_at is None else occurred_at,
            event_id=event_id,
            next_action=payment.next_action,
        )
