"""What the facade needs from the rest of paygate, as small async ports.

The composition root passes real adapters (Kafka producer, SQL store, results-topic
listener); unit tests pass fakes.
"""

from __future__ import annotations

from typing import Protocol

from domain.commands import CreatePayment
from domain.idempotency import OrderPayment
from domain.payment import PaymentView


class CommandPublisher(Protocol):
    async def publish_create_payment(self, command: CreatePayment) -> None:
        """Durably hand the command to Kafka (acks=all), keyed by order id."""
        ...


class PaymentQueries(Protocol):
    async def get_payment(self, payment_request_id: str) -> PaymentView | None: ...

    async def order_payments(self, order_id: str) -> list[OrderPayment]:
        """The order's payments, for key resolution and order protection before publishing."""
        ...


class ResultWaiter(Protocol):
    async def wait_for_final(self, payment_request_id: str, timeout_s: float) -> bool:
        """Wait until a final result for the payment is seen; True if one was seen in time."""
        ...
