"""Requests waiting for a payment's (or a refund's) final result, and what wakes them.

A payment that needs its payer to act (``requires_action``) ends a wait like a final one:
only the client, who shows the payer its next action, can move it on.

Invariant: a waiter is woken only for an id whose final result exists, and a final result
is never missed: the waiter registers before it checks the store, so a result that lands
between the two is seen by one or the other. When the listener may have missed events
(it reconnected at the end of the topic), :meth:`ResultWaiters.recheck_store` looks each
waited id up again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
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
        self._waiters: defaultdict[str, set[asyncio.Future[None]]] = defaultdict(set)

    async def wait_for_final(self, waited_id: str, timeout_s: float) -> bool:
        """Also waits for a refund, given its ``ref_`` id."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiters[waited_id].add(future)
        try:
            if await self._is_final_in_store(waited_id):
                return True
            await asyncio.wait_for(future, timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(waited_id)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiters[waited_id]

    def final_seen(self, waited_id: str) -> None:
        """A final result for ``waited_id`` exists: wake everyone waiting for it."""
        for future in self._waiters.get(waited_id, ()):
            if not future.done():
                future.set_result(None)

    async def recheck_store(self) -> None:
        """Wake the waiters whose result became final while nobody was listening.

        Best effort: if the store cannot answer, those requests wait out their time, as
        they would have without this.
        """
        for waited_id in list(self._waiters):
            try:
                final = await self._is_final_in_store(waited_id)
            except Exception as exc:
                log.warning("re-checking waiting requests failed: %s", type(exc).__name__)
                return
            if final:
                self.final_seen(waited_id)

    async def _is_final_in_store(self, waited_id: str) -> bool:
        if is_refund_id(waited_id):
            refund = await self._refunds.get(waited_id)
            return refund is not None and refund.status.is_final
        payment = await self._queries.get_payment(waited_id)
        return payment is not None and payment.status.ends_a_wait
