"""The facade's one translation point for database outages.

Every port that reads the database (payment queries, refund queries, the API-key lookup,
the result waiter, which looks in the store first, the rate limiter, whose buckets may
be there, and the sink that records providers' notifications) is wrapped here by
:func:`http_facade.app.build_app`. A call that fails because the database cannot be
reached, as the composition root's ``is_outage`` judges it (the facade knows no
database driver), becomes ``service_unavailable``: 503 with ``Retry-After``, no
traceback. The outage itself is logged by an :class:`~telemetry.outage_log.OutageLog`:
once when it starts, a summary at most every minute, once when a call works again.

Every other exception passes through untouched: a bug stays a 500 with its traceback.
Nothing was written when the database could not be reached, except that a create may
have published its command before its wait for the result failed; hence the answer's
advice, the same as for Kafka: retry with the same ``Idempotency-Key``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import timedelta
from typing import TypeVar

from domain.accounts import Account
from domain.errors import ErrorCode, PaygateError
from domain.idempotency import OrderPayment
from domain.payment_view import PaymentView
from domain.refund_view import RefundView
from domain.vaulted import VaultedAccount
from domain.webhook_views import CreatedEndpoint, DeliveryInfo, EndpointInfo
from http_facade.auth import Authenticator
from http_facade.ports import (
    NoticeSink,
    PaymentMethodVault,
    PaymentQueries,
    RefundQueries,
    ResultWaiter,
    ResultWatch,
    WebhookEndpoints,
)
from http_facade.rate_limit import RateLimiter
from providers.notices import NoticeResult, ProviderNotice
from telemetry.outage_log import OutageLog

_T = TypeVar("_T")

IsOutage = Callable[[BaseException], bool]

UNAVAILABLE_MESSAGE = (
    "paygate cannot reach its database just now; retry after Retry-After seconds with the "
    "same Idempotency-Key"
)


def never(exc: BaseException) -> bool:
    """The judgement of a facade built without a database (tests with fakes)."""
    return False


class DatabaseGuard:
    def __init__(self, is_outage: IsOutage, outages: OutageLog) -> None:
        self._is_outage = is_outage
        self._outages = outages

    async def call(self, pending: Awaitable[_T], *, proves_reachable: bool = True) -> _T:
        """``pending``'s result; an outage raised as ``service_unavailable``.

        ``proves_reachable``: whether a call that worked certainly reached the database,
        so that it may end an outage.
        """
        try:
            result = await pending
        except PaygateError:
            raise
        except Exception as exc:
            if not self._is_outage(exc):
                raise
            self._outages.failed(exc)
            raise PaygateError(ErrorCode.SERVICE_UNAVAILABLE, UNAVAILABLE_MESSAGE) from exc
        if proves_reachable:
            self._outages.succeeded()
        return result


class GuardedQueries:
    def __init__(self, inner: PaymentQueries, guard: DatabaseGuard) -> None:
        self._inner = inner
        self._guard = guard

    async def get_payment(self, payment_request_id: str) -> PaymentView | None:
        return await self._guard.call(self._inner.get_payment(payment_request_id))

    async def payment_with_refunds(
        self, payment_request_id: str
    ) -> tuple[PaymentView, list[RefundView]] | None:
        return await self._guard.call(self._inner.payment_with_refunds(payment_request_id))

    async def order_payments(self, order_id: str, client_id: str | None) -> list[OrderPayment]:
        return await self._guard.call(self._inner.order_payments(order_id, client_id))

    async def client_order_page(
        self, client_id: str, order_id: str, *, limit: int, starting_after: str | None
    ) -> list[PaymentView]:
        return await self._guard.call(
            self._inner.client_order_page(
                client_id, order_id, limit=limit, starting_after=starting_after
            )
        )


class GuardedRefunds:
    def __init__(self, inner: RefundQueries, guard: DatabaseGuard) -> None:
        self._inner = inner
        self._guard = guard

    async def get(self, refund_id: str) -> RefundView | None:
        return await self._guard.call(self._inner.get(refund_id))

    async def of_payments(self, payment_request_ids: Sequence[str]) -> dict[str, list[RefundView]]:
        return await self._guard.call(self._inner.of_payments(payment_request_ids))


class GuardedAuthenticator:
    def __init__(self, inner: Authenticator, guard: DatabaseGuard) -> None:
        self._inner = inner
        self._guard = guard

    async def authenticate(self, api_key: str) -> str | None:
        # A cache in front answers some lookups without the database, so a lookup that
        # worked does not prove it reachable.
        return await self._guard.call(self._inner.authenticate(api_key), proves_reachable=False)


class GuardedWaiter:
    def __init__(self, inner: ResultWaiter, guard: DatabaseGuard) -> None:
        self._inner = inner
        self._guard = guard

    async def wait_for_final(
        self, payment_request_id: str, timeout_s: float, *, refusal_event_id: str | None = None
    ) -> bool:
        # A waiter need not read the store at all, so its success proves nothing.
        waited = self._inner.wait_for_final(
            payment_request_id, timeout_s, refusal_event_id=refusal_event_id
        )
        return await self._guard.call(waited, proves_reachable=False)

    @contextlib.contextmanager
    def watch(
        self, payment_request_id: str, *, refusal_event_id: str | None = None
    ) -> Iterator[ResultWatch]:
        with self._inner.watch(payment_request_id, refusal_event_id=refusal_event_id) as watch:
            yield GuardedWatch(watch, self._guard)


class GuardedWatch:
    def __init__(self, inner: ResultWatch, guard: DatabaseGuard) -> None:
        self._inner = inner
        self._guard = guard

    async def final(self, timeout_s: float) -> bool:
        # Reads the store only when the time runs out: its success proves nothing.
        return await self._guard.call(self._inner.final(timeout_s), proves_reachable=False)


class GuardedNotices:
    """The public notification route's writes: an outage while a provider's notification
    is recorded (nothing committed: the claim, the outcome and its event are one
    transaction) is the same stable 503 as anywhere else, which the provider answers by
    sending the notification again, not a 500 with a traceback per notification."""

    def __init__(self, inner: NoticeSink, guard: DatabaseGuard) -> None:
        self._inner = inner
        self._guard = guard

    async def record(self, notice: ProviderNotice) -> NoticeResult:
        return await self._guard.call(self._inner.record(notice))


class GuardedWebhooks:
    def __init__(self, inner: WebhookEndpoints, guard: DatabaseGuard) -> None:
        self._inner = inner
        self._guard = guard

    async def create_endpoint(
        self, client_id: str, url: str, enabled_events: Sequence[str], description: str | None
    ) -> CreatedEndpoint:
        return await self._guard.call(
            self._inner.create_endpoint(client_id, url, enabled_events, description)
        )

    async def endpoints(self, client_id: str) -> list[EndpointInfo]:
        return await self._guard.call(self._inner.endpoints(client_id))

    async def endpoint(self, client_id: str, endpoint_id: str) -> EndpointInfo | None:
        return await self._guard.call(self._inner.endpoint(client_id, endpoint_id))

    async def delete_endpoint(self, client_id: str, endpoint_id: str) -> bool:
        return await self._guard.call(self._inner.delete_endpoint(client_id, endpoint_id))

    async def deliveries(
        self,
        *,
        client_id: str | None,
        endpoint_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
    ) -> list[DeliveryInfo]:
        return await self._guard.call(
            self._inner.deliveries(
                client_id=client_id, endpoint_id=endpoint_id, status=status, limit=limit
            )
        )

    async def retry(
        self, delivery_id: str, *, client_id: str | None, endpoint_id: str | None = None
    ) -> DeliveryInfo | None:
        return await self._guard.call(
            self._inner.retry(delivery_id, client_id=client_id, endpoint_id=endpoint_id)
        )


class GuardedRateLimiter:
    def __init__(self, inner: RateLimiter, guard: DatabaseGuard) -> None:
        self._inner = inner
        self._guard = guard

    async def acquire(self, client_id: str) -> float:
        # Most acquisitions spend a local lease without a database call: proves nothing.
        return await self._guard.call(self._inner.acquire(client_id), proves_reachable=False)


class GuardedVault:
    """The vault, which lives in paygate's database by default (or its own): unreachable
    is 503 like any read, a vault refusal passes through with its own code."""

    def __init__(self, inner: PaymentMethodVault, guard: DatabaseGuard) -> None:
        self._inner = inner
        self._guard = guard

    async def tokenize(
        self,
        account: Account,
        *,
        client_id: str | None,
        saved: bool = False,
        expires_in: timedelta | None = None,
    ) -> VaultedAccount:
        return await self._guard.call(
            self._inner.tokenize(account, client_id=client_id, saved=saved, expires_in=expires_in)
        )

    async def describe(
        self, token: str, *, client_id: str | None, holder_name: str | None = None
    ) -> VaultedAccount:
        return await self._guard.call(
            self._inner.describe(token, client_id=client_id, holder_name=holder_name)
        )

    async def check_opens(
        self, token: str, *, client_id: str | None, holder_name: str | None = None
    ) -> VaultedAccount:
        return await self._guard.call(
            self._inner.check_opens(token, client_id=client_id, holder_name=holder_name)
        )

    async def delete(self, token: str, *, client_id: str | None) -> bool:
        return await self._guard.call(self._inner.delete(token, client_id=client_id))
