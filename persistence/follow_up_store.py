"""The base of the capture and cancel stores: what they share but the in-flight status.

A follow-up store's subclass names its in-flight status (``capturing``, ``canceling``)
and decides, for a payment that passed the shared checks of persistence.follow_up, whether
the command starts, reports the follow-up under way or done, or is refused: a pure rule
(persistence.follow_up_bulk.Decide) that a begin run alone and a batch of begins
(persistence.follow_up_bulk) both apply. The claim on a follow-up under way, its outcome
and the reconcilers' listing are the same for both.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.clock import utc_now
from domain.error_info import ErrorInfo
from domain.payment_view import PaymentView
from domain.status import RELEASED, PaymentStatus
from persistence.claims import (
    claimable,
    least_recently_examined,
    new_claim,
    take_claim,
)
from persistence.follow_up import (
    FollowUpBegin,
    FollowUpCommand,
    FollowUpExisting,
    FollowUpRefused,
    FollowUpStarted,
    PaymentEventBuilder,
    RefusalEvent,
    finish_follow_up,
    locked_follow_up,
    refuse,
    start_from_authorized,
)
from persistence.follow_up_bulk import (
    BeginRequest,
    Decide,
    Existing,
    FinishRequest,
    Start,
    begin_many,
    finish_many,
)
from persistence.group_commit import Bulk, GroupCommit
from persistence.lock_order import RowLocks
from persistence.payment_replay import enqueue_as_it_is
from persistence.payment_rows import payment_in, payment_view_of, refunded_at_provider_to
from persistence.row_claims import RowClaims
from persistence.tables import payments

# Where the provider may have taken an authorization without paygate: captured, or released.
_SETTLED_STATUSES: Final = frozenset(
    {PaymentStatus.SUCCEEDED, PaymentStatus.CANCELED, PaymentStatus.EXPIRED}
)
# Captured, then refunded at the provider outside paygate (domain.provider_refunds).
_REFUNDED_STATUSES: Final = frozenset({PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED})


class FollowUpStore:
    IN_FLIGHT: ClassVar[PaymentStatus]

    def __init__(
        self,
        engine: AsyncEngine,
        writes: GroupCommit,
        clock: Callable[[], datetime] = utc_now,
        *,
        claim_lease: timedelta = timedelta(seconds=30),
    ) -> None:
        """``writes`` is the payment store's group commit: one writer queue per database."""
        self._engine = engine
        self._writes = writes
        self._clock = clock
        self._lease = claim_lease
        self._claims = RowClaims(payments, writes, clock, claim_lease)

    async def _begin(
        self, command: FollowUpCommand, refusal_event: RefusalEvent, decide: Decide
    ) -> FollowUpBegin:
        now = self._clock()
        claim = new_claim(now, self._lease)

        async def record(conn: AsyncConnection) -> FollowUpBegin:
            found = await locked_follow_up(conn, command, refusal_event, now)
            if isinstance(found, FollowUpRefused):
                return found
            decision = decide(command, found)
            if isinstance(decision, Start):
                return await start_from_authorized(
                    conn,
                    command.payment_request_id,
                    in_flight=self.IN_FLIGHT,
                    claim=claim,
                    now=now,
                    values=decision.values,
                )
            if isinstance(decision, Existing):
                return FollowUpExisting(found)
            return await refuse(conn, found, decision.error, refusal_event, now)

        request = BeginRequest(command, refusal_event, decide, self.IN_FLIGHT, claim, now, record)
        return await self._writes.run(
            record,
            Bulk(begin_many, request),
            locks=RowLocks.of(payments=[command.payment_request_id]),
        )

    async def claim(self, payment_request_id: str) -> FollowUpStarted | None:
        """Take the claim on a follow-up under way, or None: it is settled, or another
        worker holds it. Decided with the payment row locked, so of two takers one wins.

        The payment comes back as read under that lock, with the claim taken: the caller
        resolves *that* follow-up. A view read before the claim may be of a follow-up since
        settled, with another (another amount, another capture key) now in flight; resolved
        from it, the provider would be sent the old amount while the store records the new
        one."""
        now = self._clock()

        async def record(conn: AsyncConnection) -> FollowUpStarted | None:
            claim = await take_claim(
                conn,
                payments,
                payment_request_id,
                statuses=(self.IN_FLIGHT.value,),
                now=now,
                lease=self._lease,
            )
            if claim is None:
                return None
            payment = await payment_in(conn, payment_request_id)
            assert payment is not None, "a claimed row exists"
            return FollowUpStarted(payment, claim)

        return await self._writes.run(record, locks=RowLocks.of(payments=[payment_request_id]))

    @property
    def claim_lease(self) -> timedelta:
        """How long a claim written or renewed by this store lasts (consumer.claimed_calls)."""
        return self._lease

    async def renew(self, payment_request_id: str, claim: str) -> bool:
        return await self._claims.renew(payment_request_id, claim)

    async def release(self, payment_request_id: str, claim: str) -> None:
        await self._claims.release(payment_request_id, claim)

    async def _finish(
        self,
        payment_request_id: str,
        *,
        claim: str,
        status: PaymentStatus,
        error: ErrorInfo | None,
        event: PaymentEventBuilder,
        values: dict[str, Any] | None = None,
        refunded_at_provider: int = 0,
    ) -> bool:
        """``values``: columns set to plain values. ``refunded_at_provider``: the refunded
        total the provider reports (0: the total stays), written by the one expression of
        persistence.payment_rows on either path, from the row as it was."""
        now = self._clock()
        plain = values or {}
        raised = refunded_at_provider_to(refunded_at_provider) if refunded_at_provider else {}

        async def record(conn: AsyncConnection) -> bool:
            return await finish_follow_up(
                conn,
                payment_request_id,
                in_flight=self.IN_FLIGHT,
                claim=claim,
                status=status,
                error=error,
                event=event,
                now=now,
                values={**plain, **raised},
            )

        request = FinishRequest(
            payment_request_id,
            self.IN_FLIGHT,
            claim,
            status,
            error,
            event,
            now,
            plain,
            record,
            refunded_at_provider=refunded_at_provider,
        )
        return await self._writes.run(
            record, Bulk(finish_many, request), locks=RowLocks.of(payments=[payment_request_id])
        )

    async def settle_as_provider_holds(
        self,
        payment_request_id: str,
        *,
        claim: str,
        status: PaymentStatus,
        captured_minor: int | None,
        error: ErrorInfo | None,
        event: PaymentEventBuilder,
        refunded_minor: int = 0,
    ) -> bool:
        """Record the authorization as the provider holds it, read after this follow-up's
        call: ``succeeded`` (``captured_minor`` what the provider says it took, None all
        of it), ``partially_refunded`` or ``refunded`` (captured, then ``refunded_minor``
        of it refunded outside paygate: the payment's refunded total, with no refund row:
        domain.provider_refunds) or released (``canceled``, ``expired``: nothing
        captured), with ``error`` when the follow-up itself was not made (the provider
        settled the authorization the other way, without paygate); the claim is released.

        Only from the in-flight status and only for the claim's holder: returns False,
        changing nothing, otherwise."""
        if status not in _SETTLED_STATUSES | _REFUNDED_STATUSES:
            raise ValueError(f"an authorization is not settled {status.value}")
        if status in RELEASED and captured_minor is not None:
            raise ValueError("a released authorization captured nothing")
        if (status in _REFUNDED_STATUSES) != (refunded_minor > 0):
            raise ValueError(f"a {status.value} payment has {refunded_minor} refunded")
        # The payment was not captured in paygate's records until now: no refund of
        # paygate's is counted in the total ``refunded_minor`` replaces.
        return await self._finish(
            payment_request_id,
            claim=claim,
            status=status,
            error=error,
            event=event,
            values={"captured_minor": captured_minor},
            refunded_at_provider=refunded_minor,
        )

    async def republish(
        self, payment_request_id: str, event_of: PaymentEventBuilder
    ) -> PaymentView | None:
        """Answer a replay: queue the event of the payment as it is now, read under its row
        lock in the same transaction (persistence.payment_replay). The payment as queued."""
        now = self._clock()

        async def record(conn: AsyncConnection) -> PaymentView | None:
            return await enqueue_as_it_is(conn, payment_request_id, event_of, now)

        return await self._writes.run(record, locks=RowLocks.of(payments=[payment_request_id]))

    async def _in_flight(self, updated_before: datetime, limit: int) -> list[PaymentView]:
        """Payments in flight with no answer since before ``updated_before``, whose claim
        may be taken; never examined first, then the longest ago."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(payments)
                .where(payments.c.status == self.IN_FLIGHT.value)
                .where(payments.c.updated_at < updated_before)
                .where(claimable(payments, self._clock()))
                .order_by(*least_recently_examined(payments), payments.c.updated_at)
                .limit(limit)
            )
            return [payment_view_of(row._mapping) for row in rows]
