"""An in-memory world behind the facade's ports, where the test plays the consumer.

Published commands are only recorded; the test then settles them the way the pipeline
would (a payment succeeded, failed with a code, stays pending...), so that what a client
sees on its next request is exactly what the test decided. The database can be switched
off: every query then fails the way asyncpg does when PostgreSQL refuses connections.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from domain.accounts import AccountType
from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode
from domain.idempotency import OrderPayment
from domain.money import Money
from domain.payment_view import PaymentView
from domain.payments import CreatePayment
from domain.refund_view import RefundView
from domain.refunds import RefundPayment, RefundStatus
from domain.status import PaymentStatus
from domain.vaulted import AccountToken, AnyAccount, VaultedAccount
from http_facade.app import build_app
from http_facade.auth import Authenticator
from http_facade.ports import CommandPublisher
from http_facade.rate_limit import TokenBuckets
from http_facade.webhook_url_check import EndpointUrlCheck
from persistence.availability import is_database_unavailable
from telemetry.metrics import Metrics
from tests.support.app_client import started_client
from tests.support.builders import PAYEE_IBAN, SUCCESS_CARD
from tests.support.fake_vault_rows import FakeVaultRows
from tests.support.fake_webhooks import FakeWebhooks
from tests.support.memory_vault import memory_vault
from tests.support.result_watch import WatchByWaiting, watch_by_waiting

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
ACCOUNT_KEY = b"facade-world-key"
API_KEYS = {
    "pgk_0123456789abcdef_" + "a" * 64: "client-1",
    "pgk_fedcba9876543210_" + "b" * 64: "client-2",
}
KEY_1, KEY_2 = API_KEYS

Command = CreatePayment | RefundPayment | CapturePayment | CancelPayment


def payment_body(order_id: str = "order-1", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "userId": "user-1",
        "orderId": order_id,
        "amount": "10.50",
        "currency": "EUR",
        "paymentMethod": "card",
        "payerAccount": {"type": "card", "number": SUCCESS_CARD},
        "payeeAccount": {"type": "iban", "number": PAYEE_IBAN},
    }
    body.update(changes)
    return body


def database_refused() -> OSError:
    """What asyncpg raises, unwrapped by SQLAlchemy, when PostgreSQL refuses connections."""
    return ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")


@dataclass
class World:
    payments: dict[str, PaymentView] = field(default_factory=dict)
    refunds: dict[str, RefundView] = field(default_factory=dict)
    published: list[Command] = field(default_factory=list)
    database_down: bool = False
    publish_error: Exception | None = None
    final_within_wait: bool = False
    # What happens while a request waits for a result (the consumer settling it, say);
    # the wait then sees a final result.
    while_waiting: Callable[[World], None] | None = None
    # The refusal event id each wait was given (see ResultWaiter): the one that would
    # answer the waiting request's own command.
    refusals_awaited: list[str | None] = field(default_factory=list)
    failed_queries: int = 0  # calls that found the database down
    webhooks: FakeWebhooks = field(default_factory=FakeWebhooks)
    # What the host names of webhook URLs resolve to (the facade's SSRF check asks).
    dns: dict[str, list[str]] = field(default_factory=dict)

    async def resolve(self, host: str, port: int) -> list[str]:
        return self.dns.get(host, [])

    # The vault the facade tokenizes into: the consumer's part reads it back.
    vault_rows: FakeVaultRows = field(default_factory=FakeVaultRows)

    # --- the publisher ------------------------------------------------------------------

    async def publish_create_payment(self, command: CreatePayment) -> None:
        self._publish(command)

    async def publish_refund(self, command: RefundPayment) -> None:
        self._publish(command)

    async def publish_capture(self, command: CapturePayment) -> None:
        self._publish(command)

    async def publish_cancel(self, command: CancelPayment) -> None:
        self._publish(command)

    def _publish(self, command: Command) -> None:
        if self.publish_error is not None:
            raise self.publish_error
        self.published.append(command)

    # --- the consumer's part, played by the test -----------------------------------------

    def settle_payment(
        self, command: CreatePayment, status: PaymentStatus, error: ErrorCode | None = None
    ) -> PaymentView:
        """Store the payment as the consumer would after processing ``command``; a second
        copy of the same command lands on the same row."""
        command = dataclasses.replace(
            command, payer=self.vaulted(command.payer), payee=self.vaulted(command.payee)
        )
        view = PaymentView(
            payment_request_id=command.payment_request_id,
            order_id=command.order_id,
            user_id=command.user_id,
            idempotency_key=command.idempotency_key,
            status=status,
            amount=command.amount,
            payment_method=command.payment_method,
            payer=command.payer.ref(ACCOUNT_KEY),
            payee=command.payee.ref(ACCOUNT_KEY),
            provider="sandbox",
            provider_reference="ch_1" if status is PaymentStatus.SUCCEEDED else None,
            error=None if error is None else ErrorInfo(error, f"settled with {error.value}"),
            created_at=NOW,
            updated_at=NOW,
            parameters_hash=command.parameters_fingerprint(ACCOUNT_KEY),
            client_id=command.client_id,
        )
        self.payments[view.payment_request_id] = view
        return view

    def vaulted(self, account: AnyAccount) -> AnyAccount:
        """A token as the consumer's intake finds it in the vault."""
        if not isinstance(account, AccountToken):
            return account
        entry = self.vault_rows.entries[account.token]
        return VaultedAccount(
            AccountType(entry.account_type),
            account.token,
            entry.masked,
            entry.fingerprint,
            account.holder_name,
        )

    def settle_refund(
        self, command: RefundPayment, status: RefundStatus, error: ErrorCode | None = None
    ) -> RefundView:
        payment = self.payments[command.payment_request_id]
        amount = command.amount or Money(payment.refundable_minor, payment.amount.currency)
        if status is RefundStatus.SUCCEEDED:
            refunded = payment.refunded_minor + amount.minor_units
            self.payments[payment.payment_request_id] = dataclasses.replace(
                payment,
                refunded_minor=refunded,
                status=PaymentStatus.REFUNDED
                if refunded == payment.amount.minor_units
                else PaymentStatus.PARTIALLY_REFUNDED,
            )
        view = RefundView(
            refund_id=command.refund_id,
            payment_request_id=command.payment_request_id,
            order_id=command.order_id,
            idempotency_key=command.idempotency_key,
            amount=amount,
            reason=command.reason,
            status=status,
            provider="sandbox",
            provider_reference="re_1" if status is RefundStatus.SUCCEEDED else None,
            error=None if error is None else ErrorInfo(error, f"settled with {error.value}"),
            created_at=NOW,
            updated_at=NOW,
            parameters_hash=command.parameters_fingerprint(),
        )
        self.refunds[view.refund_id] = view
        return view

    def last(self) -> Command:
        return self.published[-1]

    # --- the queries ----------------------------------------------------------------------

    def _database(self) -> None:
        if self.database_down:
            self.failed_queries += 1
            raise database_refused()

    async def get_payment(self, payment_request_id: str) -> PaymentView | None:
        self._database()
        return self.payments.get(payment_request_id)

    async def payment_with_refunds(
        self, payment_request_id: str
    ) -> tuple[PaymentView, list[RefundView]] | None:
        self._database()
        view = self.payments.get(payment_request_id)
        if view is None:
            return None
        return view, [
            r for r in self.refunds.values() if r.payment_request_id == view.payment_request_id
        ]

    async def order_payments(self, order_id: str, client_id: str | None) -> list[OrderPayment]:
        self._database()
        return [
            OrderPayment(p.payment_request_id, p.idempotency_key, p.status, key_expired=False)
            for p in self._of(client_id, order_id)
        ]

    async def client_order_page(
        self, client_id: str, order_id: str, *, limit: int, starting_after: str | None
    ) -> list[PaymentView]:
        self._database()
        page = list(self._of(client_id, order_id))
        if starting_after is not None:
            ids = [p.payment_request_id for p in page]
            page = page[ids.index(starting_after) + 1 :] if starting_after in ids else []
        return page[:limit]

    def _of(self, client_id: str | None, order_id: str) -> Iterator[PaymentView]:
        for payment in self.payments.values():
            if payment.order_id == order_id and payment.client_id == client_id:
                yield payment

    async def get(self, refund_id: str) -> RefundView | None:
        self._database()
        return self.refunds.get(refund_id)

    async def of_payments(self, payment_request_ids: Sequence[str]) -> dict[str, list[RefundView]]:
        self._database()
        return {
            pid: [r for r in self.refunds.values() if r.payment_request_id == pid]
            for pid in payment_request_ids
        }

    async def wait_for_final(
        self, payment_request_id: str, timeout_s: float, *, refusal_event_id: str | None = None
    ) -> bool:
        self._database()  # the real waiter looks in the store first
        self.refusals_awaited.append(refusal_event_id)
        if self.while_waiting is not None:
            self.while_waiting(self)
            return True
        return self.final_within_wait

    def watch(
        self, payment_request_id: str, *, refusal_event_id: str | None = None
    ) -> contextlib.nullcontext[WatchByWaiting]:
        wait = functools.partial(self.wait_for_final, refusal_event_id=refusal_event_id)
        return watch_by_waiting(wait, payment_request_id)

    # --- the API-key store ------------------------------------------------------------------

    async def authenticate(self, api_key: str) -> str | None:
        self._database()
        return API_KEYS.get(api_key)


async def world_client(
    world: World,
    *,
    publisher: CommandPublisher | None = None,
    authenticator: Authenticator | None = None,
    rate_limiter: TokenBuckets | None = None,
    **options: Any,
) -> TestClient[Any, Any]:
    """The facade as the service wires it (database outages recognised as in production),
    with ``world`` behind every port; the caller closes the client."""
    app = world_app(
        world,
        publisher=publisher,
        authenticator=authenticator,
        rate_limiter=rate_limiter,
        **options,
    )
    return await started_client(app)


def world_app(
    world: World,
    *,
    publisher: CommandPublisher | None = None,
    authenticator: Authenticator | None = None,
    rate_limiter: TokenBuckets | None = None,
    **options: Any,
) -> web.Application:
    """The application :func:`world_client` serves, for a test that serves it itself."""
    return build_app(
        publisher=publisher or world,
        queries=world,
        refunds=world,
        waiter=world,
        metrics=Metrics(CollectorRegistry()),
        account_key=ACCOUNT_KEY,
        vault=memory_vault(ACCOUNT_KEY, world.vault_rows),
        authenticator=authenticator or world,
        rate_limiter=rate_limiter or TokenBuckets(rate_per_s=1000.0, burst=1_000_000),
        clock=lambda: NOW,
        is_database_outage=is_database_unavailable,
        **{
            "webhooks": world.webhooks,
            "webhook_url_check": EndpointUrlCheck(development=False, resolver=world.resolve),
            **options,
        },
    )
