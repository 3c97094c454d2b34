"""Provider calls made under a claim: each goes out only while the claim is known to be the
caller's.

The invariant: a holder of a row's claim (persistence.claims) sends a call to the provider
-- a charge, refund, capture or void, a first send or a re-send, and every question about
one -- only (a) holding its place at the provider's call gate (providers.call_gate) and
(b) after a write that confirmed the claim (took it, wrote it with the row, renewed it)
was made *after* that place was taken, or so shortly before the call that the claim
cannot have run out in between: its confirmation is **fresh**.

Fresh is defined by the lease, on the monotonic clock, not by a guess at how long a wait
lasts: a confirmation is fresh from the moment before its write was issued (the store reads
its clock for the new expiry after that, so the claim lasts at least a lease from then)
for a third of the lease, and it covers one call. So

* the happy path keeps its round trips: a first send follows the write that made its row
  (begin) by a vault read and, at a gate with room, no wait at all; it goes out unrenewed;
* a first send that waited at a full gate (or anywhere else) for a third of the lease
  renews once it has its place, before it goes out: the wait is bounded by no lease (the
  gate full of calls each up to the provider timeout), and another worker may have taken
  the row over in it and called;
* a confirmation is spent by the call it covered: a question and then a re-send, or a
  refused call and then a question about it, renew before each call after the first.
  The question may have lasted up to the provider timeout, near a lease.

Why not renew whenever the gate made the call wait: at a slow provider the gate is full
all the time (the runner admits more commands than calls), so every call would add a
write while holding its place, lowering the provider's rate for no safety: a wait of
milliseconds leaves the claim its lease. Why a third: the claim outlives the confirmation
by two thirds of a lease (twenty seconds by default) beyond the freshness, a margin for
the other workers' clocks, which decide the takeover, and for the call's way out. The
outbox relay renews its lease inside a third too.

No deadlock: a renewal is a write of its own through the writer queue, which never waits
for a place at the gate, and no transaction is held while waiting for the place.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Protocol, TypeVar

from consumer.outcome import Outcome
from providers.call_gate import a_place_at
from providers.port import PaymentProvider

T = TypeVar("T")

# A confirmation of the claim is fresh for this share of the lease (module docstring).
FRESH_SHARE_OF_LEASE = 1 / 3


class ClaimTakenOver(Exception):
    """The write that was to confirm the claim found it another's: nothing was sent, and the
    holder must record nothing and stop."""


class RenewsClaims(Protocol):
    """A store of rows claimed by token (payments, refunds, follow-ups): what
    :meth:`HeldClaim.of_row` renews a claim with."""

    @property
    def claim_lease(self) -> timedelta: ...

    async def renew(self, row_id: str, claim: str, /) -> bool: ...


class HeldClaim:
    """A claim the worker holds, and whether a confirmation of it is fresh (module
    docstring). ``renew`` is the write that confirms it (the store's renew for the row and
    token); ``ticks``, the monotonic clock."""

    @classmethod
    def of_row(
        cls,
        store: RenewsClaims,
        row_id: str,
        claim: str,
        *,
        ticks: Callable[[], float] = time.monotonic,
    ) -> HeldClaim:
        """The claim ``claim`` on ``store``'s row ``row_id``, renewed by the store's renew
        and lasting its lease."""
        return cls(lambda: store.renew(row_id, claim), store.claim_lease, ticks=ticks)

    def __init__(
        self,
        renew: Callable[[], Awaitable[bool]],
        lease: timedelta,
        *,
        ticks: Callable[[], float] = time.monotonic,
    ) -> None:
        self._renew = renew
        self._fresh_for = lease.total_seconds() * FRESH_SHARE_OF_LEASE
        self._ticks = ticks
        self._fresh_until: float | None = None  # None: unconfirmed, or spent by a call

    def mark(self) -> float:
        """The moment to pass to :meth:`confirmed`: read right before a write that checks
        the claim is issued."""
        return self._ticks()

    def confirmed(self, since: float) -> None:
        """A write issued at ``since`` (:meth:`mark`) confirmed the claim."""
        self._fresh_until = since + self._fresh_for

    async def call(
        self,
        provider: PaymentProvider,
        call: Callable[[], Awaitable[T]],
        *,
        confirm: Callable[[], Awaitable[bool]] | None = None,
    ) -> T:
        """``call`` (a call to ``provider``) on a place at its gate, the claim renewed once
        the place is held unless a fresh confirmation covers it. ``confirm``: a write that
        must precede this call anyway and confirms the claim with it (a re-send's stamp),
        made instead of the renewal, whatever the freshness. Raises
        :class:`ClaimTakenOver` (nothing sent) when the claim is another's."""
        async with a_place_at(provider):
            if confirm is not None or not self._fresh():
                since = self.mark()
                if not await (confirm or self._renew)():
                    raise ClaimTakenOver
                self.confirmed(since)
            self._fresh_until = None  # spent: the next call confirms again
            return await call()

    def _fresh(self) -> bool:
        return self._fresh_until is not None and self._ticks() < self._fresh_until


async def unless_taken_over(work: Awaitable[Outcome]) -> Outcome:
    """``await work``; ``owned_elsewhere`` if the claim it holds was taken over before one of
    its calls went out (:class:`ClaimTakenOver`): another worker has the row now."""
    try:
        return await work
    except ClaimTakenOver:
        return Outcome.OWNED_ELSEWHERE
