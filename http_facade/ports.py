"""What the facade needs from the rest of paygate, as small async ports.

The composition root passes real adapters (Kafka producer, SQL store, results-topic
listener); unit tests pass fakes.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Protocol

from domain.accounts import Account
from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from domain.idempotency import OrderPayment
from domain.payment_view import PaymentView
from domain.payments import CreatePayment
from domain.refund_view import RefundView
from domain.refunds import RefundPayment
from domain.vaulted import VaultedAccount
from domain.webhook_views import CreatedEndpoint, DeliveryInfo, EndpointInfo
from providers.notices import NoticeResult, NotificationTerms, ProviderNotice, ReceivedNotification


class NotificationReader(Protocol):
    """Reads one provider's notifications; raises NoticeRefusedError for one that is not
    the provider's (its signature does not verify) or cannot be read. ``receive`` answers
    None for a genuine notification with nothing for paygate (an event type it does not
    read, a charge made outside paygate): acknowledged, nothing recorded."""

    @property
    def provider(self) -> str: ...

    @property
    def terms(self) -> NotificationTerms: ...

    def receive(self, notification: ReceivedNotification) -> ProviderNotice | None: ...


class NoticeSink(Protocol):
    async def record(self, notice: ProviderNotice) -> NoticeResult:
        """Record what the notice says about its attempt or refund (a claimed or
        conditional write; see consumer.provider_notices)."""
        ...


class NoNotices:
    """The sink of a facade that accepts no notifications (no reader is configured)."""

    async def record(self, notice: ProviderNotice) -> NoticeResult:
        return NoticeResult.UNKNOWN


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

    async def payment_with_refunds(
        self, payment_request_id: str
    ) -> tuple[PaymentView, list[RefundView]] | None:
        """The payment and its refunds (oldest first), read together: a payment's answer."""
        ...

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


class ResultWatch(Protocol):
    async def final(self, timeout_s: float) -> bool:
        """Wait until a final result of the watched id is seen (or, when the time runs out,
        is in the store); True if one was in time. Called once per watch."""
        ...


class ResultWaiter(Protocol):
    async def wait_for_final(
        self, payment_request_id: str, timeout_s: float, *, refusal_event_id: str | None = None
    ) -> bool:
        """Wait until a final result for the payment (or refund, by its ``ref_`` id) is
        seen; True if one was seen in time. Looks in the store first: for an id whose
        command may have been handled already. A refusal published under the id (an event
        with ``refusal`` true) ends the wait only if its event id is ``refusal_event_id``:
        the refusal of the caller's own command."""
        ...

    def watch(
        self, payment_request_id: str, *, refusal_event_id: str | None = None
    ) -> AbstractContextManager[ResultWatch]:
        """Listen for the id's final result (or the refusal ``refusal_event_id``) from
        entering on: entered before its command is published, no result can precede it, so
        nothing is read before waiting."""
        ...


class WebhookEndpoints(Protocol):
    """A client's webhook endpoints and their deliveries; every method sees only the given
    client's (another client's ids are not found)."""

    async def create_endpoint(
        self, client_id: str, url: str, enabled_events: Sequence[str], description: str | None
    ) -> CreatedEndpoint: ...

    async def endpoints(self, client_id: str) -> list[EndpointInfo]: ...

    async def endpoint(self, client_id: str, endpoint_id: str) -> EndpointInfo | None: ...

    async def delete_endpoint(self, client_id: str, endpoint_id: str) -> bool: ...

    async def deliveries(
        self,
        *,
        client_id: str | None,
        endpoint_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
    ) -> list[DeliveryInfo]: ...

    async def retry(
        self, delivery_id: str, *, client_id: str | None, endpoint_id: str | None = None
    ) -> DeliveryInfo | None: ...


class HostResolver(Protocol):
    async def __call__(self, host: str, port: int) -> list[str]:
        """The addresses ``host`` resolves to (empty, or OSError, if it does not)."""
        ...


class PaymentMethodVault(Protocol):
    """The card vault (vault.Vault): the facade tokenizes, looks up and deletes; it never
    reads a number back."""

    async def tokenize(
        self,
        account: Account,
        *,
        client_id: str | None,
        saved: bool = False,
        expires_in: timedelta | None = None,
    ) -> VaultedAccount: ...

    async def describe(
        self, token: str, *, client_id: str | None, holder_name: str | None = None
    ) -> VaultedAccount: ...

    async def check_opens(
        self, token: str, *, client_id: str | None, holder_name: str | None = None
    ) -> VaultedAccount:
        """The vaulted account after checking its number decrypts (then dropped): a broken
        one is refused (4xx) before a payment is published."""
        ...

    async def delete(self, token: str, *, client_id: str | None) -> bool: ...
