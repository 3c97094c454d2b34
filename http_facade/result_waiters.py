"""Requests waiting for a payment's (or a refund's) final result, and what wakes them.

A payment that needs its payer to act (``requires_action``) ends a wait like a final one:
only the client, who shows the payer its next action, can move it on.

A refusal (an event with ``refusal`` true: a command that reused a key with other
parameters, answered under the existing payment's or refund's id) is no state of that id:
it ends only the wait of the request whose command it refused, which registered the
refusal's event id (``domain.events.conflict_event_id`` of its own parameters), never the
wait of a request for the payment or refund itself, which may still be pending.

Invariant: a waiter is woken only for an id whose final result exists, and a final result
is never missed: :meth:`ResultWaiters.wait_for_final` registers before it checks the store,
so a result that lands between the two is seen by one or the other; a
:meth:`ResultWaiters.watch` registers before its command is published, so no result of
that command can precede it, and it looks in the store only when its wait runs out. When
the listener may have missed events (it reconnected at the end of the topic),
:meth:`ResultWaiters.recheck_store` looks each waited id up again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator
from typing import Protocol

from domain.payment_view import PaymentView
from domain.refund_view import RefundView
from domain.refunds import is_refund_id

log = logging.getLogger("paygate.http.results")


class PaymentLookup(Protocol):
    """The part of :class:`http_facade.ports.PaymentQueries` a waiter needs."""

    async def get_payment(self, payment_request_id: str) -> PaymentView | None: ...


class RefundLookup(Protocol):
    """The part of :class:`http_facade.ports.RefundQueries` a waiter needs."""

    async def get(self, refund_id: str) -> RefundView | None: ...


class ResultWaiters:
    def __init__(self, *, queries: PaymentLookup, refunds: RefundLookup) -> None:
        self._queries = queries
        self._refunds = refunds
        # Per waited id: each waiting request's future, and the event id of the refusal that
        # would answer its own command (None: refusals never wake it).
        self._waiters: defaultdict[str, dict[asyncio.Future[None], str | None]] = defaultdict(dict)

    async def wait_for_final(
        self, waited_id: str, timeout_s: float, *, refusal_event_id: str | None = None
    ) -> bool:
        """Also waits for a refund, given its ``ref_`` id. ``refusal_event_id``: the refusal
        of the caller's own command, which ends its wait too."""
        with self._registered(waited_id, refusal_event_id) as future:
            if await self.is_final_in_store(waited_id):
                return True
            return await _woken_within(future, timeout_s)

    @contextlib.contextmanager
    def watch(self, waited_id: str, *, refusal_event_id: str | None = None) -> Iterator[Watch]:
        """Listen for ``waited_id``'s final result from now on; enter it before publishing
        the command whose result it is, so that the result cannot come first and the store
        need not be read before waiting (one read less per create-and-wait).
        ``refusal_event_id`` as for :meth:`wait_for_final`."""
        with self._registered(waited_id, refusal_event_id) as future:
            yield Watch(self, waited_id, future)

    @contextlib.contextmanager
    def _registered(
        self, waited_id: str, refusal_event_id: str | None
    ) -> Iterator[asyncio.Future[None]]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[waited_id][future] = refusal_event_id
        try:
            yield future
        finally:
            waiters = self._waiters.get(waited_id)
            if waiters is not None:
                waiters.pop(future, None)
                if not waiters:
                    del self._waiters[waited_id]

    def final_seen(self, waited_id: str) -> None:
        """A final result for ``waited_id`` exists: wake everyone waiting for it."""
        for future in self._waiters.get(waited_id, ()):
            if not future.done():
                future.set_result(None)

    def refusal_seen(self, waited_id: str, event_id: str) -> None:
        """A refusal ``event_id`` was published under ``waited_id``: wake the requests
        whose own command it refused, and no other."""
        for future, refusal_event_id in self._waiters.get(waited_id, {}).items():
            if refusal_event_id == event_id and not future.done():
                future.set_result(None)

    async def recheck_store(self) -> None:
        """Wake the waiters whose result became final while nobody was listening.

        Best effort: if the store cannot answer, those requests wait out their time, as
        they would have without this.
        """
        for waited_id in list(self._waiters):
            try:
                final = await self.is_final_in_store(waited_id)
            except Exception as exc:
                log.warning("re-checking waiting requests failed: %s", type(exc).__name__)
                return
            if final:
                self.final_seen(waited_id)

    async def is_final_in_store(self, waited_id: str) -> bool:
        if is_refund_id(waited_id):
            refund = await self._refunds.get(waited_id)
            return refund is not None and refund.status.is_final
        payment = await self._queries.get_payment(waited_id)
        return payment is not None and payment.status.ends_a_wait


class Watch:
    """One registered wait, from :meth:`ResultWaiters.watch`."""

    def __init__(
        self, waiters: ResultWaiters, waited_id: str, future: asyncio.Future[None]
    ) -> None:
        self._waiters = waiters
        self._waited_id = waited_id
        self._future = future

    async def final(self, timeout_s: float) -> bool:
        """True if a final result was seen since the watch began, within ``timeout_s``.

        When the time runs out the store is read once: a result the listener could not
        report (a record it could not decode) is still found, as before the wait moved
        ahead of publishing.
        """
        if await _woken_within(self._future, timeout_s):
            return True
        return await self._waiters.is_final_in_store(self._waited_id)


async def _woken_within(future: asyncio.Future[None], timeout_s: float) -> bool:
    try:
        await asyncio.wait_for(future, timeout_s)
    except TimeoutError:
        return False
    return True
