"""A fake of consumer.ports.PaymentWrites (persistence.payment_store.PaymentStore): write-ahead
begins with order protection and key resolution, claims on the open attempt, the owner-only
writes (finish, retry schedule, failover), and the in-doubt query.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import cast

from sqlalchemy.ext.asyncio import AsyncConnection

from domain.error_info import ErrorInfo
from domain.errors import PaygateError
from domain.idempotency import OrderPayment, resolve_key
from domain.next_action import NextAction
from domain.order_protection import refusal_for_new_payment
from domain.payment_view import PaymentView
from domain.payments import CreatePayment
from domain.status import ALLOWED_TRANSITIONS, InvalidTransitionError, PaymentStatus
from persistence.attempts import (
    ATTEMPT_FAILED,
    ATTEMPT_REQUIRES_ACTION,
    ATTEMPT_SUCCEEDED,
    OPEN_ATTEMPT_STATUSES,
    attempt_key_for,
)
from persistence.claims import is_claimable, new_claim
from persistence.group_commit import Bulk, run_bulks
from persistence.outbox import OutboxMessage
from persistence.payment_begin import BeginResult, Existing, Refused, Started
from persistence.payment_claims import ClaimedAttempt, InDoubt
from tests.support.fake_database import (
    CLAIMABLE,
    WAITING,
    FakeAttempt,
    FakePaymentRow,
    FakeStore,
    payment_view,
)


class FakePaymentStore(FakeStore):
    """Payments and their attempts in ``db``; ``row`` and ``take_over`` are for tests."""

    def row(self, payment_id: str) -> FakePaymentRow:
        return self.db.payments[payment_id]

    def take_over(self, payment_id: str) -> str:
        """Another worker takes the payment's claim; returns its token."""
        return self.row(payment_id).claim.take_over(self._now(), self.db.lease)

    async def begin(
        self,
        command: CreatePayment,
        *,
        provider: str,
        account_key: bytes,
        refusal_event: Callable[[CreatePayment, PaygateError, datetime], OutboxMessage],
        seal: Callable[[CreatePayment], bytes] | None = None,
        along: Sequence[Bulk] = (),
    ) -> BeginResult:
        await self._enter("begin", command.payment_request_id)
        # In memory there is no transaction to share: the writes only need a connection
        # when they are SQL, which a fake store's callers never hand it.
        await run_bulks(cast(AsyncConnection, None), along)
        now = self._now()
        order = [
            OrderPayment(
                r.view.payment_request_id, r.view.idempotency_key, r.view.status, r.key_expired
            )
            for r in self.db.payments.values()
            if (r.view.client_id, r.view.order_id) == (command.client_id, command.order_id)
        ]
        key = resolve_key(order, command.idempotency_key)
        if key.live_payment_id is not None:
            row = self.row(key.live_payment_id)
            attempt = row.open_attempt
            return Existing(
                payment=row.view,
                same_parameters=row.view.parameters_hash
                == command.parameters_fingerprint(account_key),
                open_attempt_key=None if attempt is None else attempt.attempt_key,
                open_attempt_started_at=None if attempt is None else attempt.created_at,
                open_attempt_provider=None if attempt is None else attempt.provider,
            )
        resolved = dataclasses.replace(command, generation=key.next_generation)
        view = payment_view(resolved, account_key=account_key, provider=provider, now=now)
        refusal = refusal_for_new_payment(
            (p.status for p in order), new_attempt=command.new_attempt
        )
        if refusal is not None:
            view = dataclasses.replace(
                view, status=PaymentStatus.FAILED, error=ErrorInfo.from_error(refusal)
            )
            self.db.payments[view.payment_request_id] = FakePaymentRow(
                view, generation=key.next_generation
            )
            self.db.outbox.append(refusal_event(resolved, refusal, now))
            return Refused(refusal, now, key.next_generation)
        claim = new_claim(now, self.db.lease)
        row = FakePaymentRow(view, generation=key.next_generation)
        row.claim.hold(claim)
        attempt_key = attempt_key_for(view.payment_request_id, 1)
        row.attempts.append(
            FakeAttempt(
                attempt_key,
                1,
                provider,
                now,
                opened_by=claim.token,
                sealed_request=None if seal is None else seal(resolved),
            )
        )
        self.db.payments[view.payment_request_id] = row
        return Started(attempt_key, now, claim, key.next_generation)

    async def finish(
        self,
        payment_id: str,
        attempt_key: str,
        *,
        claim: str,
        status: PaymentStatus,
        attempt_status: str,
        provider_reference: str | None,
        error: ErrorInfo | None,
        event: OutboxMessage,
        next_action: NextAction | None = None,
    ) -> bool:
        await self._enter("finish", payment_id)
        row = self.row(payment_id)
        current = row.view.status
        owner = row.claim.held_by(claim)
        if owner and status in ALLOWED_TRANSITIONS[current]:
            attempt = row.attempt(attempt_key)
            if attempt.finished_at is not None:
                raise RuntimeError(f"attempt {attempt_key} is not open")
            row.update(
                status=status,
                provider_reference=provider_reference,
                error=error,
                updated_at=self._now(),
                next_retry_at=None,
                next_action=next_action,
            )
            row.claim.clear()
            unknown = attempt_status in OPEN_ATTEMPT_STATUSES
            # A charge a former owner reported on the attempt stays recorded as succeeded.
            if attempt.provider_reference is None:
                attempt.status = attempt_status
            else:
                attempt.status = ATTEMPT_SUCCEEDED
            if attempt_status != ATTEMPT_REQUIRES_ACTION:  # nothing charged while waiting
                attempt.provider_reference = provider_reference or attempt.provider_reference
            attempt.finished_at = None if unknown else self._now()
            attempt.sealed_request = attempt.sealed_request if unknown else None
            self.db.outbox.append(event)
            return True
        if owner and not _already_there(current, status):
            raise InvalidTransitionError(current, status)
        if attempt_status == ATTEMPT_SUCCEEDED:
            self._note_stray_charge(row.attempt(attempt_key), provider_reference)
        row.claim.release(claim)
        return False

    @staticmethod
    def _note_stray_charge(attempt: FakeAttempt, reference: str | None) -> None:
        """A charge reported by a worker that lost its claim is never dropped."""
        if attempt.status == ATTEMPT_SUCCEEDED or attempt.provider_reference is not None:
            return
        attempt.provider_reference = reference
        if attempt.finished_at is not None:
            attempt.status = ATTEMPT_SUCCEEDED

    async def claim(self, payment_id: str) -> ClaimedAttempt | None:
        await self._enter("claim", payment_id)
        row = self.db.payments.get(payment_id)
        if row is None or row.view.status not in CLAIMABLE or row.open_attempt is None:
            return None
        attempt = row.open_attempt
        claim = row.claim.take(self._now(), self.db.lease)
        if claim is None:
            return None
        return ClaimedAttempt(
            claim,
            attempt.attempt_key,
            attempt.provider,
            attempt.created_at,
            attempt.sealed_request,
            row.generation,
            row.view,
            attempt.last_sent_at or attempt.created_at,
            attempt.resend_count,
        )

    async def renew(self, payment_id: str, claim: str) -> bool:
        await self._enter("renew", payment_id)
        return self.row(payment_id).claim.renew(claim, self._now() + self.db.lease)

    async def renew_sending(self, payment_id: str, attempt_key: str, *, claim: str) -> bool:
        await self._enter("renew_sending", payment_id)
        row = self.row(payment_id)
        if not row.claim.renew(claim, self._now() + self.db.lease):
            return False
        attempt = next((a for a in row.attempts if a.attempt_key == attempt_key), None)
        if attempt is None or attempt.finished_at is not None:
            return False
        attempt.last_sent_at = self._now()
        attempt.resend_count += 1
        return True

    async def uncount_unsent(self, payment_id: str, attempt_key: str) -> None:
        await self._enter("uncount_unsent", payment_id)
        row = self.row(payment_id)
        attempt = next((a for a in row.attempts if a.attempt_key == attempt_key), None)
        if attempt is not None and attempt.resend_count > 0:
            attempt.resend_count -= 1

    async def release(self, payment_id: str, claim: str) -> None:
        await self._enter("release", payment_id)
        self.row(payment_id).claim.release(claim)

    async def schedule_retry(self, payment_id: str, at: datetime, *, claim: str) -> bool:
        await self._enter("schedule_retry", payment_id)
        row = self.row(payment_id)
        if row.view.status not in WAITING or not row.claim.held_by(claim):
            return False
        row.update(next_retry_at=at)
        row.claim.renew(claim, max(at, self._now()) + self.db.lease)
        return True

    async def check_again_at(self, payment_id: str, at: datetime) -> None:
        await self._enter("check_again_at", payment_id)
        row = self.row(payment_id)
        if row.view.status is PaymentStatus.REQUIRES_ACTION:
            row.next_check_at = at

    async def next_attempt(
        self, payment_id: str, failed_attempt_key: str, provider: str, *, claim: str
    ) -> str | None:
        await self._enter("next_attempt", payment_id)
        row = self.row(payment_id)
        latest = row.latest
        if (
            row.view.status is not PaymentStatus.PROCESSING
            or not row.claim.held_by(claim)
            or latest is None
            or latest.attempt_key != failed_attempt_key
            or latest.finished_at is not None
            # Taken over since it was opened: only the same key may be sent again.
            or latest.opened_by != claim
        ):
            return None
        now = self._now()
        latest.status, latest.finished_at = ATTEMPT_FAILED, now
        sealed, latest.sealed_request = latest.sealed_request, None
        attempt_key = attempt_key_for(payment_id, latest.attempt_no + 1)
        row.attempts.append(
            FakeAttempt(
                attempt_key, latest.attempt_no + 1, provider, now, claim, sealed_request=sealed
            )
        )
        row.update(provider=provider, updated_at=now, next_retry_at=None)
        row.claim.renew(claim, now + self.db.lease)
        return attempt_key

    async def enqueue(self, event: OutboxMessage) -> None:
        await self._enter("enqueue", event.key)
        self.db.outbox.append(event)

    async def republish(
        self, payment_id: str, event_of: Callable[[PaymentView], OutboxMessage]
    ) -> PaymentView | None:
        await self._enter("republish", payment_id)
        row = self.db.payments.get(payment_id)
        if row is None:
            return None
        self.db.outbox.append(event_of(row.view))
        return row.view

    async def get_payment(self, payment_id: str) -> PaymentView | None:
        row = self.db.payments.get(payment_id)
        return None if row is None else row.view

    async def in_doubt(self, started_before: datetime, limit: int) -> list[InDoubt]:
        await self._enter("in_doubt", "")
        now = self._now()
        found = [
            InDoubt(row.view, attempt.attempt_key, attempt.created_at, attempt.provider)
            for row in self.db.payments.values()
            if (attempt := row.open_attempt) is not None
            and attempt.created_at < started_before
            and row.view.status in CLAIMABLE
            and (
                row.view.status is not PaymentStatus.REQUIRES_ACTION
                or row.next_check_at is None
                or row.next_check_at <= now
            )
            and is_claimable(row.claim.token, row.claim.expires_at, now)
        ]
        return sorted(found, key=lambda item: item.attempt_started_at)[:limit]


def _already_there(current: PaymentStatus, target: PaymentStatus) -> bool:
    # persistence.payment_finish: a repeat of the outcome, or "unknown" after it was known.
    return current.charge_outcome is target.charge_outcome or (
        target is PaymentStatus.PENDING
        and (current.charge_known or current is PaymentStatus.REQUIRES_ACTION)
    )
