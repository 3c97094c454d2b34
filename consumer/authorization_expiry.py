"""Finds authorizations the provider settled without paygate asking: the hold ran out
(``expired``), someone voided it at the provider (``canceled``), or someone captured it
there (``succeeded``, of the amount the provider says it captured).

Providers hold an authorization for a limited time (days for cards) and then release it on
their own, telling nobody. Every pass asks the provider about the authorized payments not
examined for the longest time (at most ``PAGE_SIZE``, untouched since ``min_age``), by
their charge reference:

* the charge is released: the payment becomes ``expired`` (or ``canceled``), with its result
  event, by one conditional update from ``authorized`` (persistence.expiry_store): a capture
  or cancel that began meanwhile wins, and learns the same from the provider itself;
* the charge is captured (by hand in the provider's dashboard): the payment becomes
  ``succeeded`` of the provider's captured amount, the same way. Left ``authorized`` it
  would say money is held that was taken, and a cancel would be sent for it; an amount no
  capture of the authorization can be is not recorded (logged; asked again later). One
  the provider says it has refunded since, in part or in full (by hand too), becomes
  ``partially_refunded`` or ``refunded``, its refunded total the provider's
  (domain.provider_refunds); before, one refunded in full was left ``authorized`` for ever;
* still held (or the provider cannot answer now): the payment is marked examined and waits
  for a later pass;
* examining it raised anything but a dependency outage (consumer.pass_guard): logged with
  its traceback, marked examined all the same, and the pass goes on. Before, such a
  payment, never marked, stayed first in the order and ended every pass: no other released
  hold was ever found. An outage still ends the pass.

Nothing here asks the provider to act, so nothing here can move money.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from types import MappingProxyType
from typing import Final

from consumer.pass_guard import unless_poisoned
from consumer.payment_events import PaymentEvents
from consumer.periodic import run_periodically
from consumer.ports import ExpiryRecords
from domain.captures import captured_at_provider
from domain.clock import utc_now
from domain.payment_view import PaymentView
from domain.provider_refunds import refunded_at_provider, status_with_refunds
from domain.status import PaymentStatus
from providers.errors import ProviderError
from providers.port import ChargeOutcome, ChargeStatus
from providers.registry import Providers, UnknownProviderError

log = logging.getLogger("paygate.reconciler")

PAGE_SIZE = 200

_RELEASED: Final = MappingProxyType(
    {ChargeStatus.EXPIRED: PaymentStatus.EXPIRED, ChargeStatus.CANCELED: PaymentStatus.CANCELED}
)


class AuthorizationExpiry:
    def __init__(
        self,
        *,
        store: ExpiryRecords,
        providers: Providers,
        events: PaymentEvents,
        min_age: timedelta,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._providers = providers
        self._events = events
        self._min_age = min_age
        self._clock = clock

    async def run_once(self, limit: int = PAGE_SIZE) -> int:
        """One pass; returns how many payments it found settled (released, or captured)."""
        released = 0
        for payment in await self._store.authorized(self._clock() - self._min_age, limit):
            pid = payment.payment_request_id
            # Marked examined all the same: it goes to the back of the queue, not first again.
            released += await unless_poisoned(
                self._examine(payment),
                skipped=0,
                what="authorization not checked",
                extra={"payment_request_id": pid},
                after_skip=partial(self._store.examined, pid),
            )
        return released

    async def _examine(self, payment: PaymentView) -> int:
        pid = payment.payment_request_id
        try:
            provider = self._providers.get(payment.provider or "")
            known = await provider.charge_by_reference(payment.provider_reference or "")
        except (UnknownProviderError, ProviderError) as exc:
            log.warning("authorization not checked: %s", exc, extra={"payment_request_id": pid})
            await self._store.examined(pid)
            return 0
        if known is not None and known.status is ChargeStatus.SUCCEEDED:
            return await self._captured(payment, known)
        status = None if known is None else _RELEASED.get(known.status)
        if status is None:
            await self._store.examined(pid)
            return 0
        # No error: the status says what happened, and nothing failed on paygate's side.
        applied = await self._store.release(
            pid, status=status, error=None, event=self._events.of_payment
        )
        if applied:
            log.info(
                "authorization released by the provider",
                extra={"payment_request_id": pid, "status": status.value},
            )
        return int(applied)

    async def _captured(self, payment: PaymentView, known: ChargeOutcome) -> int:
        pid = payment.payment_request_id
        try:
            captured_minor = captured_at_provider(payment.amount, known.captured)
            taken = payment.amount.minor_units if captured_minor is None else captured_minor
            refunded_minor = refunded_at_provider(
                taken, payment.amount.currency, known.refunded, in_full=known.refunded_in_full
            )
        except ValueError as exc:
            log.error(
                "authorization captured, not recorded: %s", exc, extra={"payment_request_id": pid}
            )
            await self._store.examined(pid)
            return 0
        applied = await self._store.captured(
            pid,
            captured_minor=captured_minor,
            event=self._events.of_payment,
            # Captured and refunded by hand since: refunded in part, or in full.
            status=status_with_refunds(taken, refunded_minor),
            refunded_minor=refunded_minor,
        )
        if applied:
            log.warning(
                "authorization captured at the provider without paygate",
                extra={"payment_request_id": pid},
            )
        return int(applied)

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        await run_periodically(stop, interval_s, self.run_once, "released authorizations found")
