"""Where the stray-charge sweep finds its work and records what it found.

A *stray charge* is money the provider took under an attempt key that is not the payment's
charge. Claims (see persistence.claims) keep every schedule of paygate's own workers from
making one; this is the defence in depth behind them, for a bug or a provider that charges a
key late. The candidates, each examined once (again only if a provider's notification says
money was taken under the key since: :meth:`StrayStore.reopen`):

* an attempt still open on a payment that is final (nothing may be in flight there);
* an attempt whose recorded outcome is a charge the payment does not stand on: the payment
  failed, or a later attempt follows it;
* an attempt closed as "certainly not charged" (failover, retries used up) that the provider
  has not yet confirmed holds no charge (``verified_at`` unset), once it is ``settle_after``
  old, so that a call of it still in flight has arrived;
* a stray charge whose reversal has not been answered yet.

The stray charges come in the same order as the attempts, on their own ``next_sweep_at``:
never tried first, then longest due, those not due yet left out. The sweep stamps it before
every try (:meth:`StrayStore.reverse_again_at`), so a page of reversals that keep getting no
answer (a provider error, a refund left pending) cannot come first on every pass and keep a
newer stray charge from being reversed; an answer ends the reversal (``reversed`` or
``failed``), so the stamp only holds back one still under way.

Which come first: the attempts never asked about (or reopened since), then those whose
``next_sweep_at`` has come, longest due first; an attempt whose time has not come yet is not
read. The sweep stamps ``next_sweep_at`` before every question (:meth:`StrayStore.ask_again_at`),
answered or not: an answer marks the key verified (or records the stray charge), so the
stamp only matters for a key that got none -- a provider error or timeout, a provider no
longer configured, an answer the adapter cannot read, a trade still waiting for its payer,
or a pass that died on the way. Such a key moves behind the others instead of coming first
on every pass, so a page of keys no provider answers cannot hide a newer stray charge; it is
held back for a while that grows with its age but is capped (consumer.stray_charges), so it
is never skipped for good.

Every pass reads only attempts not verified yet (``ix_provider_attempts_unverified``, a
partial index). So that this set holds new work and does not grow with history, the
attempts captured payments stand on, which are never candidates, are marked verified too
(:meth:`StrayStore.mark_own_charges`): ``verified_at`` says no charge is under the key but
the payment's own.

A reopen is never lost to a mark (the invariant the database enforces, not timing). Each
attempt carries a check generation, ``reopen_count``, that only :meth:`StrayStore.reopen`
changes (it increments it and clears ``verified_at`` in one statement). Every mark of what
a pass read -- :meth:`StrayStore.mark_verified` and :meth:`StrayStore.mark_own_charges` --
updates only where the generation is still the one read with the key: the sweep reads a key,
asks the provider ("nothing charged"), the payer pays and the provider's signed notice
reopens the key, then the sweep's mark finds the generation moved on and changes nothing;
the key stays unverified and the next pass asks again, now hearing of the charge. On
PostgreSQL the reopen and the mark lock the same row, and the one that waits re-reads its
``WHERE`` on the row the other committed; SQLite serialises writers. The one write that
sets ``verified_at`` whatever the generation, :meth:`StrayStore.record_found`, records the
charge the provider confirmed under the key: a reopen in between is about that same charge
(a provider holds one charge per key), now recorded and reversed.

``next_sweep_at`` is an ordering hint, not a mark: nothing but the sweep's order depends on
it, so it never touches ``verified_at``, and a reopen clears it (the key comes first again).
Its stamp is made only at the generation read, like the marks: a reopen committed before
the stamp is not pushed back by it, and one committed after clears it.

A stray charge's reversal has one owner at a time, by a claim on its row
(persistence.claims, as payments and refunds have): the sweeper that records the stray
charge holds it from that insert on, another takes it only once it is free or its lease
has run out (:meth:`StrayStore.claim_reversal`), and a sweeper asks or tells the provider
nothing about the reversal without it. Every write of the reversal's progress -- the
re-try stamp, the key noted before a refund, the answer recorded -- carries the holder's
token in its ``WHERE``: a sweeper whose claim was taken over (its lease ran out in a long
call) records nothing. The record of the answer releases the claim in the same statement.
The compare-and-set on the noted key (``replacing=``, ``noted=``) stays, behind the claim.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Exists,
    Select,
    Table,
    Update,
    and_,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.clock import utc_now
from domain.money import Money
from domain.status import CAPTURED, HELD, PaymentStatus
from persistence.attempts import ATTEMPT_SUCCEEDED, payment_of_attempt
from persistence.claims import Claim, claim_columns, claimable, held_by, new_claim
from persistence.engine import as_utc, as_utc_or_none
from persistence.group_commit import GroupCommit
from persistence.lock_order import RowLocks
from persistence.row_claims import RowClaims
from persistence.tables import payments, provider_attempts, stray_charges

STRAY_REVERSING = "reversing"
STRAY_REVERSED = "reversed"
STRAY_FAILED = "failed"
# How long a sweeper's claim on a stray charge lasts unless renewed (the payments' default).
DEFAULT_CLAIM_LEASE = timedelta(seconds=30)


class LateReversalFailure(StrEnum):
    """What recording a provider's late failure of a stray charge's reversal did
    (:meth:`StrayStore.reversal_failed_later`)."""

    RECORDED = "recorded"  # reversed -> failed
    UNDER_WAY = "under_way"  # still reversing with that refund: the sweep's answer first
    NONE = "none"  # nothing of this stray charge's to record


_FINAL = [s.value for s in PaymentStatus if s.is_final]
_STANDS_ON_A_CHARGE = [s.value for s in (*CAPTURED, *HELD)]
# Standing on a charge for good: a captured payment is final and stays captured.
_CAPTURED = [s.value for s in CAPTURED]


@dataclass(frozen=True, slots=True)
class StrayCandidate:
    attempt_key: str
    payment_id: str
    provider: str
    amount: Money
    payment_status: PaymentStatus
    payment_reference: str | None
    # Set when the attempt is already a recorded stray charge awaiting its reversal.
    stray_reference: str | None = None
    # The attempt's check generation (``reopen_count``) when read: a mark of this candidate
    # takes effect only while it is unchanged, i.e. no reopen came in between.
    generation: int = 0
    # When the attempt was opened (None for a recorded stray charge): how long the sweep
    # holds the key back after a question without an answer grows with its age.
    attempt_created_at: datetime | None = None
    # When the stray charge was recorded (None for an attempt): how long the sweep holds its
    # reversal back after a try without an answer grows with the time since.
    found_at: datetime | None = None
    # When the attempt was closed (None while open): a call of its key reaches the provider
    # by this plus the settle time at the latest, and only a "no charge" answered the
    # provider's search lag after that is final (domain.search_lag).
    attempt_finished_at: datetime | None = None
    # The key of the reversal refund last sent for a recorded stray charge (None: none
    # sent yet): the sweep asks about that refund first (consumer.stray_charges).
    reversal_key: str | None = None
    # The token of the claim the sweep holds on the stray charge's reversal (None as read:
    # set by the sweep once it took the claim); every write of what the reversal did
    # carries it.
    claim_token: str | None = None


class StrayStore:
    def __init__(
        self,
        engine: AsyncEngine,
        writes: GroupCommit,
        clock: Callable[[], datetime] = utc_now,
        *,
        claim_lease: timedelta = DEFAULT_CLAIM_LEASE,
    ) -> None:
        self._engine = engine
        self._writes = writes
        self._clock = clock
        self._lease = claim_lease
        self._claims = RowClaims(stray_charges, writes, clock, claim_lease)

    async def candidates(self, settled_before: datetime, limit: int) -> list[StrayCandidate]:
        """Up to ``limit`` attempts to ask about, in the order of the module docstring
        (never asked first, then longest due; those not due yet left out), then up to
        ``limit`` stray charges whose reversal is unanswered, in the same order on their
        own stamp."""
        now = self._clock()
        query = attempt_candidates(settled_before, now, limit)
        stray = stray_charges
        reversing = (
            select(
                stray.c.attempt_key,
                stray.c.payment_id,
                stray.c.provider,
                stray.c.amount_minor,
                stray.c.currency,
                payments.c.status,
                payments.c.provider_reference,
                stray.c.provider_reference.label("stray_reference"),
                stray.c.found_at,
                stray.c.reversal_key,
            )
            .join(payments, payments.c.id == stray.c.payment_id)
            .where(stray.c.status == STRAY_REVERSING)
            .where(or_(stray.c.next_sweep_at.is_(None), stray.c.next_sweep_at <= now))
            # Another sweeper is at it: not read (its claim decides anyway, see
            # claim_reversal).
            .where(claimable(stray, now))
            # Never tried first, then longest due: a reversal without an answer moves back.
            .order_by(stray.c.next_sweep_at.is_not(None), stray.c.next_sweep_at, stray.c.found_at)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            found = [
                StrayCandidate(
                    r.attempt_key,
                    r.payment_id,
                    r.provider,
                    Money(r.amount_minor, r.currency),
                    PaymentStatus(r.status),
                    r.provider_reference,
                    generation=r.reopen_count,
                    attempt_created_at=as_utc(r.created_at),
                    attempt_finished_at=as_utc_or_none(r.finished_at),
                )
                for r in await conn.execute(query)
            ]
            found += [
                StrayCandidate(
                    r.attempt_key,
                    r.payment_id,
                    r.provider,
                    Money(r.amount_minor, r.currency),
                    PaymentStatus(r.status),
                    r.provider_reference,
                    r.stray_reference,
                    found_at=as_utc(r.found_at),
                    reversal_key=r.reversal_key,
                )
                for r in await conn.execute(reversing)
            ]
        return found

    async def mark_own_charges(self, limit: int) -> int:
        """Mark verified (without asking the provider) up to ``limit`` attempts that a
        captured payment stands on; returns how many were marked.

        Such an attempt is never a candidate, and never becomes one: a captured payment
        stays captured (refunds included), its reference stays this attempt's, and no
        attempt follows a final payment's. Left unverified, each would stay in the set of
        unverified attempts every pass reads (through ``ix_provider_attempts_unverified``)
        for good, so that set would grow with history. Marked, the set holds only new
        work: attempts of payments still moving, and the candidates.

        Each key is marked only at the generation it was read with (see the module
        docstring): a reopen committed between this read and the mark is not overwritten."""
        attempt = provider_attempts
        now = self._clock()
        own = (
            select(attempt.c.attempt_key, attempt.c.reopen_count)
            .join(payments, payments.c.id == attempt.c.payment_id)
            .where(attempt.c.verified_at.is_(None))
            .where(attempt.c.status == ATTEMPT_SUCCEEDED)
            # An attempt left open is candidate (a) of the module docstring: asked, not
            # marked.
            .where(attempt.c.finished_at.is_not(None))
            .where(payments.c.status.in_(_CAPTURED))
            .where(payments.c.provider_reference == attempt.c.provider_reference)
            .where(~_has_later(attempt))
            .where(~_recorded(attempt))
            .order_by(attempt.c.created_at)
            .limit(limit)
            # Rows chosen by a query cannot be locked in the writers' order
            # (persistence.lock_order): an attempt another transaction holds is left to the
            # next pass rather than waited for.
            .with_for_update(skip_locked=True, of=attempt)
        )

        async def record(conn: AsyncConnection) -> int:
            read = [(row.attempt_key, row.reopen_count) for row in await conn.execute(own)]
            if not read:
                return 0
            # (key, generation) pairs as read: on PostgreSQL another transaction's reopen
            # may commit between this select and the update.
            result = await conn.execute(
                update(provider_attempts)
                .where(
                    or_(
                        *(
                            and_(
                                provider_attempts.c.attempt_key == key,
                                provider_attempts.c.reopen_count == generation,
                            )
                            for key, generation in read
                        )
                    )
                )
                .where(provider_attempts.c.verified_at.is_(None))
                .values(verified_at=now)
            )
            return result.rowcount

        return await self._writes.run(record)

    async def mark_verified(self, candidate: StrayCandidate) -> bool:
        """The provider holds no charge under the candidate's key but the payment's own: it
        need not be asked again. An attempt left open on a final payment is closed.

        Only if the key was not reopened since ``candidate`` was read (its generation is
        unchanged); else nothing changes and this returns False: the provider's answer may
        predate the charge the reopen reported, so the next pass asks again."""
        now = self._clock()
        return await self._changes_a_row(
            candidate.attempt_key,
            _at_its_generation(candidate).values(
                verified_at=now,
                finished_at=func.coalesce(provider_attempts.c.finished_at, now),
                sealed_request=None,
            ),
        )

    async def close_unverified(self, candidate: StrayCandidate) -> bool:
        """Close the candidate's attempt, left open on a final payment, without marking it
        verified: its provider answered "no charge", but from a search that may lag behind
        a charge (domain.search_lag), so the answer is final only that lag after the last
        call of the key could arrive. Closing starts that count; the key stays a candidate
        (closed, not verified) and is asked again. Only at the generation read, like the
        marks; False, changing nothing, otherwise."""
        now = self._clock()
        return await self._changes_a_row(
            candidate.attempt_key,
            _at_its_generation(candidate)
            .where(provider_attempts.c.verified_at.is_(None))
            .values(
                finished_at=func.coalesce(provider_attempts.c.finished_at, now),
                sealed_request=None,
            ),
        )

    async def ask_again_at(self, candidate: StrayCandidate, at: datetime) -> bool:
        """Stamp the candidate, about to be asked about: :meth:`candidates` reads it again
        only from ``at``, and after every key never asked or due earlier. Made before the
        question, so that a key whose question gets no answer (or whose pass dies) moves
        behind the others whatever happened; an answer marks it verified or recorded.

        Only at the generation ``candidate`` was read with and while unverified; False,
        changing nothing, otherwise. Why it cannot lose a reopen: it writes only
        ``next_sweep_at``, an ordering hint, never ``verified_at``; a reopen committed before
        it moved the generation on (this changes nothing, the key stays first), and one
        committed after it clears the stamp. On PostgreSQL both lock the row and the later
        re-reads its ``WHERE``; SQLite serialises writers."""
        return await self._changes_a_row(
            candidate.attempt_key,
            _at_its_generation(candidate)
            .where(provider_attempts.c.verified_at.is_(None))
            .values(next_sweep_at=at),
        )

    async def claim_reversal(self, attempt_key: str) -> Claim | None:
        """Take the claim on the stray charge's reversal (see the module docstring), or
        None: its reversal is no longer under way, or another sweeper holds the claim and
        its lease has not run out. Decided with the row locked, so of two takers one wins;
        the one that loses sends nothing."""
        return await self._claims.take(attempt_key, (STRAY_REVERSING,))

    async def renew_reversal(self, attempt_key: str, token: str) -> bool:
        """Extend the holder's claim by a lease, before a provider call; False if ``token``
        is no longer the stray charge's (then the caller must not call the provider)."""
        return await self._claims.renew(attempt_key, token)

    async def release_reversal(self, attempt_key: str, token: str) -> None:
        """Give the claim up (a no-op once it is not ``token``'s), so the next pass need not
        wait for its lease: made after a try whose answer leaves the reversal under way."""
        await self._claims.release(attempt_key, token)

    async def reverse_again_at(self, attempt_key: str, at: datetime, *, token: str) -> bool:
        """Stamp the stray charge whose reversal is about to be tried: :meth:`candidates`
        reads it again only from ``at``, and after every one never tried or due earlier.
        Made before the try, so that one without an answer (or whose pass dies) moves
        behind the others whatever happened; an answer ends the reversal.

        Only while the reversal is under way and its claim is ``token``'s; False, changing
        nothing, otherwise. It writes only ``next_sweep_at``, an ordering hint that nothing
        else reads."""
        return await self._changes_a_row(
            attempt_key,
            update(stray_charges)
            .where(stray_charges.c.attempt_key == attempt_key)
            .where(stray_charges.c.status == STRAY_REVERSING)
            .where(held_by(stray_charges, token))
            .values(next_sweep_at=at),
        )

    async def note_reversal_key(
        self, attempt_key: str, reversal_key: str, *, replacing: str | None, token: str
    ) -> bool:
        """Write down the key of the reversal refund about to be sent, before it is sent:
        the sweep asks the provider about that refund on its next try, before reading the
        charge, whose refunded amount counts a refund still pending (that may yet fail).

        Only while the reversal is under way, its claim is ``token``'s, and the key noted is
        still ``replacing`` (the one the sweep read, or wrote itself, and asked about);
        False, changing nothing, otherwise. Two sweepers that read the stray charge together
        could otherwise each write a key over the other's: the one behind would replace the
        key of a refund the other has in flight, which no pass would ask about again. The
        claim keeps the second from getting this far; the noted key is checked still, in
        depth."""
        return await self._changes_a_row(
            attempt_key,
            update(stray_charges)
            .where(stray_charges.c.attempt_key == attempt_key)
            .where(stray_charges.c.status == STRAY_REVERSING)
            .where(held_by(stray_charges, token))
            .where(_noted_key_is(replacing))
            .values(reversal_key=reversal_key, updated_at=self._clock()),
        )

    async def reversal_failed_later(
        self,
        attempt_key: str,
        provider: str,
        *,
        reversal_key: str,
        reversal_reference: str,
        error: str,
    ) -> LateReversalFailure:
        """The provider failed the reversal refund sent under ``reversal_key`` for
        ``attempt_key``'s stray charge (Stripe's ``refund.failed``), with the reference
        ``reversal_reference``.

        * ``RECORDED``: the stray charge, recorded ``reversed`` with that refund as its
          reversal (or as the refund last sent, its key noted), is ``failed`` now, the
          money taken again, for an operator;
        * ``UNDER_WAY``: the stray charge is still ``reversing`` with that refund as the one
          its sweep sent: the sweep may hold an answer the provider made before the failure
          (``succeeded``) and record it ``reversed`` after this; acknowledged now, the
          failure would be lost, so the caller answers busy and the provider sends it again
          once the sweep recorded its answer (or asked about the refund and found it
          failed);
        * ``NONE``: anything else, changing nothing (a replay finds it failed already).

        Decided under the stray charge's payment's lock, which the sweep's record of its
        answer takes too: either that record committed and is seen, or it waits."""

        async def record(conn: AsyncConnection) -> LateReversalFailure:
            moved = await conn.execute(
                update(stray_charges)
                .where(stray_charges.c.attempt_key == attempt_key)
                .where(stray_charges.c.provider == provider)
                .where(stray_charges.c.status == STRAY_REVERSED)
                # Its reversal that refund, or the refund last sent still noted: a pass can
                # record the charge reversed from its refunded amount, counting that refund
                # pending once it reached the provider after the pass asked about its key.
                .where(
                    or_(
                        stray_charges.c.reversal_reference == reversal_reference,
                        stray_charges.c.reversal_key == reversal_key,
                    )
                )
                .values(status=STRAY_FAILED, error_message=error, updated_at=self._clock())
            )
            if moved.rowcount:
                return LateReversalFailure.RECORDED
            under_way = await conn.execute(
                select(stray_charges.c.attempt_key)
                .where(stray_charges.c.attempt_key == attempt_key)
                .where(stray_charges.c.provider == provider)
                .where(stray_charges.c.status == STRAY_REVERSING)
                .where(stray_charges.c.reversal_key == reversal_key)
            )
            if under_way.first() is not None:
                return LateReversalFailure.UNDER_WAY
            return LateReversalFailure.NONE

        return await self._writes.run(record, locks=_under_its_payment(attempt_key))

    async def hold_first_question(self, attempt_key: str, until: datetime) -> bool:
        """Keep the sweep from asking about an unverified key before ``until``: for a key
        whose payment an operator failed on the provider's word that nothing is under it
        (consumer.payment_settlement). The search that kept the payment in doubt for a day
        may still lag; asked at once, its "nothing" would mark the key verified for good and
        a charge that shows later would never be found. Asked later, it is.

        Only for a key still unverified and never reopened (generation 0): a provider's
        notice that reopened it meanwhile reported money under it, which the sweep must ask
        about at once. False, changing nothing, otherwise."""
        attempt = provider_attempts
        return await self._changes_a_row(
            attempt_key,
            update(attempt)
            .where(attempt.c.attempt_key == attempt_key)
            .where(attempt.c.verified_at.is_(None))
            .where(attempt.c.reopen_count == 0)
            .values(next_sweep_at=until),
        )

    async def _changes_a_row(self, attempt_key: str, statement: Update) -> bool:
        """Runs ``statement``, a write of ``attempt_key``'s rows, through the group commit;
        whether it changed a row."""

        async def record(conn: AsyncConnection) -> int:
            return (await conn.execute(statement)).rowcount

        return await self._writes.run(record, locks=_under_its_payment(attempt_key)) > 0

    async def reopen(self, attempt_key: str, provider: str) -> bool:
        """The provider's own word (a signed notification) says it charged ``attempt_key``,
        which the payment does not stand on: unmark it verified, so the sweep asks about it
        again and, if the provider confirms the charge, records, counts and reverses it.

        Why this and not trusting the notice: the sweep's question is the one path that
        finds, counts and reverses stray money; this only makes sure a key it checked
        before the money arrived is checked again. Harmless when nothing was charged (one
        more question). Returns False when no attempt of ``provider`` has this key, or it is
        a recorded stray charge already (found, its reversal under way or done).

        The key's generation is incremented with it, so a mark the sweep is about to make
        from an answer it got before this changes nothing (see the module docstring); its
        ``next_sweep_at`` is cleared, so the next pass reads it among the first."""
        attempt = provider_attempts

        async def record(conn: AsyncConnection) -> int:
            result = await conn.execute(
                update(attempt)
                .where(attempt.c.attempt_key == attempt_key)
                .where(attempt.c.provider == provider)
                .where(~_recorded(attempt))
                .values(
                    verified_at=None,
                    reopen_count=attempt.c.reopen_count + 1,
                    next_sweep_at=None,
                )
            )
            return result.rowcount

        return await self._writes.run(record, locks=_under_its_payment(attempt_key)) > 0

    async def record_found(
        self, candidate: StrayCandidate, provider_reference: str
    ) -> Claim | None:
        """Record a stray charge (reversal under way), its reversal claimed by the caller
        (the claim returned); None if another sweeper recorded it.

        Sets ``verified_at`` whatever the generation: a reopen since the candidate was read
        reported money under this key, and the provider holds one charge per key, the one
        just confirmed and recorded here; the stray record, not ``verified_at``, drives its
        reversal. A reopen of a recorded key is refused (:meth:`reopen`)."""
        now = self._clock()
        claim = new_claim(now, self._lease)

        async def record(conn: AsyncConnection) -> None:
            await conn.execute(
                insert(stray_charges).values(
                    **claim_columns(claim),
                    attempt_key=candidate.attempt_key,
                    payment_id=candidate.payment_id,
                    provider=candidate.provider,
                    provider_reference=provider_reference,
                    amount_minor=candidate.amount.minor_units,
                    currency=candidate.amount.currency,
                    status=STRAY_REVERSING,
                    found_at=now,
                    updated_at=now,
                )
            )
            # The attempt says what the provider did under its key.
            await conn.execute(
                update(provider_attempts)
                .where(provider_attempts.c.attempt_key == candidate.attempt_key)
                .values(
                    status=ATTEMPT_SUCCEEDED,
                    provider_reference=provider_reference,
                    finished_at=now,
                    verified_at=now,
                    sealed_request=None,
                )
            )

        try:
            await self._writes.run(record, locks=_under_its_payment(candidate.attempt_key))
        except IntegrityError:
            return None
        return claim

    async def record_reversal(
        self,
        attempt_key: str,
        status: str,
        reference: str | None,
        error: str | None,
        *,
        noted: str | None,
        token: str,
    ) -> bool:
        """Record the reversal's answer and release its claim, only while it is under way,
        its claim is still ``token``'s, and the reversal key noted is still ``noted`` (the
        one the answer was about, or that the sweep read before reading the charge); False,
        changing nothing, otherwise: another sweeper took the claim over (this one's lease
        ran out while it waited for the provider) and acts on what it learned since, or
        noted the key of a refund, which a charge read before it cannot account for, and
        the next pass asks about it."""
        return await self._changes_a_row(
            attempt_key,
            update(stray_charges)
            .where(stray_charges.c.attempt_key == attempt_key)
            .where(stray_charges.c.status == STRAY_REVERSING)
            .where(held_by(stray_charges, token))
            .where(_noted_key_is(noted))
            .values(
                status=status,
                reversal_reference=reference,
                error_message=error,
                updated_at=self._clock(),
                **claim_columns(None),
            ),
        )

    async def all(self) -> list[dict[str, object]]:
        """Every stray charge recorded, oldest first (for operators and tests)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(stray_charges).order_by(stray_charges.c.found_at))
            return [{**row._mapping, "found_at": as_utc(row.found_at)} for row in rows]


def attempt_candidates(settled_before: datetime, now: datetime, limit: int) -> Select[Any]:
    """The attempts of :meth:`StrayStore.candidates` as of ``now``: unverified (so read
    through the partial index ``ix_provider_attempts_unverified``), due, in sweep order."""
    attempt = provider_attempts
    has_later = _has_later(attempt)
    recorded = _recorded(attempt)
    return (
        select(
            attempt.c.attempt_key,
            attempt.c.payment_id,
            attempt.c.provider,
            payments.c.amount_minor,
            payments.c.currency,
            payments.c.status,
            payments.c.provider_reference,
            attempt.c.reopen_count,
            attempt.c.created_at,
            attempt.c.finished_at,
        )
        .join(payments, payments.c.id == attempt.c.payment_id)
        .where(~recorded)
        .where(attempt.c.verified_at.is_(None))
        .where(or_(attempt.c.next_sweep_at.is_(None), attempt.c.next_sweep_at <= now))
        .where(
            or_(
                and_(attempt.c.finished_at.is_(None), payments.c.status.in_(_FINAL)),
                and_(
                    attempt.c.status == ATTEMPT_SUCCEEDED,
                    or_(~payments.c.status.in_(_STANDS_ON_A_CHARGE), has_later),
                ),
                and_(
                    attempt.c.finished_at.is_not(None),
                    attempt.c.finished_at < settled_before,
                    attempt.c.status != ATTEMPT_SUCCEEDED,
                    payments.c.status.in_(_FINAL),
                ),
            )
        )
        # Never asked first, then longest due: a key without an answer moves back.
        .order_by(
            attempt.c.next_sweep_at.is_not(None),
            attempt.c.next_sweep_at,
            attempt.c.created_at,
        )
        .limit(limit)
    )


def _at_its_generation(candidate: StrayCandidate) -> Update:
    """An update of the candidate's attempt that changes nothing once the attempt was
    reopened since the candidate was read (its generation moved on): how a mark or stamp
    made from a provider's earlier answer never overwrites a reopen."""
    return (
        update(provider_attempts)
        .where(provider_attempts.c.attempt_key == candidate.attempt_key)
        .where(provider_attempts.c.reopen_count == candidate.generation)
    )


def _has_later(attempt: Table) -> Exists:
    """SQL: another attempt of the same payment follows ``attempt``."""
    later = provider_attempts.alias("later")
    return exists().where(
        and_(
            later.c.payment_id == attempt.c.payment_id,
            later.c.attempt_no > attempt.c.attempt_no,
        )
    )


def _recorded(attempt: Table) -> Exists:
    """SQL: ``attempt`` is a recorded stray charge."""
    return exists().where(stray_charges.c.attempt_key == attempt.c.attempt_key)


def _noted_key_is(key: str | None) -> ColumnElement[bool]:
    """The stray charge's noted reversal key is ``key`` (None: none noted)."""
    column = stray_charges.c.reversal_key
    return column.is_(None) if key is None else column == key


def _under_its_payment(attempt_key: str) -> RowLocks:
    """An attempt's rows (and its stray charge's) are written under its payment's lock, the
    place of attempt rows in the writers' lock order (persistence.lock_order)."""
    return RowLocks.of(payments=[payment_of_attempt(attempt_key)])
