"""A fake of consumer.ports.CaptureWrites (persistence.capture_store.CaptureStore): the move
to ``capturing`` claims the payment, and the capture's claim is the payment's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from domain.captures import CapturePayment
from domain.client_scope import in_scope, no_payment_in_scope
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.payment_view import PaymentView
from domain.status import CAPTURED, PaymentStatus
from persistence.capture_store import (
    CaptureBegin,
    CaptureExisting,
    CaptureRefused,
    CaptureStarted,
)
from persistence.claims import is_claimable, new_claim
from persistence.follow_up import FollowUpStarted, PaymentEventBuilder
from persistence.outbox import OutboxMessage
from tests.support.fake_database import FakePaymentRow, FakeStore


class FakeCaptureStore(FakeStore):
    """The payment's claim is the capture's: a capture under way is its holder's."""

    def row(self, payment_id: str) -> FakePaymentRow:
        return self.db.payments[payment_id]

    def take_over(self, payment_id: str) -> str:
        return self.row(payment_id).claim.take_over(self._now(), self.db.lease)

    async def begin(
        self,
        command: CapturePayment,
        refusal_event: Callable[[PaymentView, PaygateError], OutboxMessage],
    ) -> CaptureBegin:
        await self._enter("begin", command.payment_request_id)
        row = self.db.payments.get(command.payment_request_id)
        if row is None or row.view.order_id != command.order_id:
            return CaptureRefused(no_payment_in_scope(), None)
        if not in_scope(row.view.client_id, command.client_id):
            unknown = no_payment_in_scope()
            self.db.outbox.append(refusal_event(row.view, unknown))
            return CaptureRefused(unknown, row.view)
        status = row.view.status
        if status is PaymentStatus.AUTHORIZED:
            claim = new_claim(self._now(), self.db.lease)
            row.update(status=PaymentStatus.CAPTURING, updated_at=self._now())
            row.claim.hold(claim)
            return CaptureStarted(row.view, claim)
        if status is PaymentStatus.CAPTURING or status in CAPTURED:
            return CaptureExisting(row.view)
        error = PaygateError(ErrorCode.PAYMENT_NOT_CAPTURABLE, f"the payment is {status.value}")
        self.db.outbox.append(refusal_event(row.view, error))
        return CaptureRefused(error, row.view)

    async def claim(self, payment_request_id: str) -> FollowUpStarted | None:
        await self._enter("claim", payment_request_id)
        row = self.db.payments.get(payment_request_id)
        if row is None or row.view.status is not PaymentStatus.CAPTURING:
            return None
        claim = row.claim.take(self._now(), self.db.lease)
        return None if claim is None else FollowUpStarted(row.view, claim)

    async def renew(self, payment_request_id: str, claim: str) -> bool:
        await self._enter("renew", payment_request_id)
        return self.row(payment_request_id).claim.renew(claim, self._now() + self.db.lease)

    async def release(self, payment_request_id: str, claim: str) -> None:
        await self._enter("release", payment_request_id)
        self.row(payment_request_id).claim.release(claim)

    async def finish(
        self,
        payment_request_id: str,
        *,
        claim: str,
        captured: bool,
        error: ErrorInfo | None,
        event: PaymentEventBuilder,
    ) -> bool:
        await self._enter("finish", payment_request_id)
        row = self.row(payment_request_id)
        if row.view.status is not PaymentStatus.CAPTURING or not row.claim.held_by(claim):
            return False
        row.update(
            status=PaymentStatus.SUCCEEDED if captured else PaymentStatus.AUTHORIZED,
            error=error,
            updated_at=self._now(),
        )
        row.claim.clear()
        self.db.outbox.append(event(row.view))
        return True

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
        await self._enter("settle_as_provider_holds", payment_request_id)
        row = self.row(payment_request_id)
        if row.view.status is not PaymentStatus.CAPTURING or not row.claim.held_by(claim):
            return False
        row.update(
            status=status,
            error=error,
            captured_minor=captured_minor,
            refunded_minor=refunded_minor,
            updated_at=self._now(),
        )
        row.claim.clear()
        self.db.outbox.append(event(row.view))
        return True

    async def republish(
        self, payment_request_id: str, event_of: Callable[[PaymentView], OutboxMessage]
    ) -> PaymentView | None:
        await self._enter("republish", payment_request_id)
        row = self.db.payments.get(payment_request_id)
        if row is None:
            return None
        self.db.outbox.append(event_of(row.view))
        return row.view

    async def capturing(self, updated_before: datetime, limit: int) -> list[PaymentView]:
        await self._enter("capturing", "")
        now = self._now()
        found = [
            row.view
            for row in self.db.payments.values()
            if row.view.status is PaymentStatus.CAPTURING
            and row.view.updated_at < updated_before
            and is_claimable(row.claim.token, row.claim.expires_at, now)
        ]
        return sorted(found, key=lambda view: view.updated_at)[:limit]
