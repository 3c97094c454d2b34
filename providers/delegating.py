"""A base for wrappers of a payment provider: every call of the port passed to ``inner``.

A wrapper (the process-wide call gate, the circuit breaker) changes how calls run, not
what they are, so it extends :class:`DelegatingProvider` and overrides one of two hooks
instead of forwarding each of the port's methods by hand:

* :meth:`DelegatingProvider._moving_money` runs ``charge``, ``capture``, ``cancel`` and
  ``refund``: the calls that may move money;
* :meth:`DelegatingProvider._asking` runs ``charge_status``, ``charge_by_reference``,
  ``close_charge`` and ``refund_status``: the calls that ask about, or end the wait of, a
  charge or refund made already, and move no money.

Both hooks await the call unchanged by default. ``name``, ``idempotency_window``,
``status_search_lag``, ``refund_status_lag``, ``start`` and ``stop`` are the inner
provider's. The invariant: a
method added to the port is forwarded here once, and mypy --strict proves below that this
base, and so every wrapper, is a :class:`providers.port.PaymentProvider`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

from providers.port import (
    CancelRequest,
    CaptureRequest,
    ChargeOutcome,
    ChargeRequest,
    PaymentProvider,
    RefundOutcome,
    RefundRequest,
)

_T = TypeVar("_T")


class DelegatingProvider:
    def __init__(self, inner: PaymentProvider) -> None:
        self._inner = inner

    async def _moving_money(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run a call that may move money."""
        return await call()

    async def _asking(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run a call that moves no money."""
        return await call()

    @property
    def inner(self) -> PaymentProvider:
        """The provider this wrapper passes its calls to (itself perhaps a wrapper)."""
        return self._inner

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def idempotency_window(self) -> timedelta | None:
        return self._inner.idempotency_window

    @property
    def status_search_lag(self) -> timedelta:
        return self._inner.status_search_lag

    @property
    def refund_status_lag(self) -> timedelta:
        return self._inner.refund_status_lag

    async def start(self) -> None:
        await self._inner.start()

    async def stop(self) -> None:
        await self._inner.stop()

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        return await self._moving_money(lambda: self._inner.charge(request))

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        return await self._moving_money(lambda: self._inner.capture(request))

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        return await self._moving_money(lambda: self._inner.cancel(request))

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        return await self._moving_money(lambda: self._inner.refund(request))

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        return await self._asking(lambda: self._inner.charge_status(attempt_key))

    async def charge_by_reference(self, provider_reference: str) -> ChargeOutcome | None:
        return await self._asking(lambda: self._inner.charge_by_reference(provider_reference))

    async def close_charge(self, attempt_key: str) -> ChargeOutcome | None:
        return await self._asking(lambda: self._inner.close_charge(attempt_key))

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
        return await self._asking(lambda: self._inner.refund_status(refund_key, charge_reference))


if TYPE_CHECKING:
    # Checked, never run: the base is the port, with every method a wrapper inherits.
    _IS_THE_PORT: type[PaymentProvider] = DelegatingProvider
