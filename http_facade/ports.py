"""What the facade needs from the rest of paygate, as small async ports.

The composition root passes real adapters (Kafka producer, SQL store, results-topic
listener); unit tests pass fakes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from domain.idempotency import OrderPayment
from domain.payment_view import PaymentView
from domain.payments import CreatePayment
from domain.refund_view import RefundView
from domain.refunds import RefundPayment


class CommandPublisher(Protocol):
    async def publish_create_payment(self, command: CreatePayment) -> None:
        """Durably hand the command to Kafka (acks=all), keyed by order id."""
        ...

    async def publish_refund(self, command: RefundPayment) -> None:
        """Likewise, keyed by the payment's order id: it is processed after the payment."""
        ...

    async def publish_capture(self, command: CapturePayment) -> None:
        """Likewise, keyed by the payment's order id."""
        ...

    async def publish_cancel(self, command: CancelPayment) -> None:
        """Likewise, keyed by the payment's order id."""
        ...


class PaymentQueries(Protocol):
    async def get_payment(self, payment_request_id: str) -> PaymentView | None: ...

    async def order_payments(self, order_id: str, client_id: str | None) -> list[OrderPayment]:
        """The client's order's payments, for key resolution and order protection before
        publishing."""
        ...

    async def client_order_page(
        self, client_id: str, order_id: str, *, limit: int, starting_after: str | None
    ) -> list[PaymentView]:
        """Up to ``limit`` of the client's payments of the order, oldest first, after the
        payment ``starting_after``."""
        ...


class RefundQueries(Protocol):
    async def get(self, refund_id: str) -> RefundView | None: ...

    async def of_payments(self, payment_request_ids: Sequence[str]) -> dict[str, list[RefundView]]:
        """Each payment's refunds, oldest first; every id is a key."""
        ...


class ResultWaiter(Protocol):
    async def wait_for_final(self, payment_request_id: str, timeout_s: float) -> bool:
        """Wait until a final result for the payment (or refund, by its ``ref_`` id) is
        seen; True if one was seen in time."""
        ...
