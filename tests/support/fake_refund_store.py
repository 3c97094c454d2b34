"""A fake of consumer.ports.RefundWrites (persistence.refund_store.RefundStore), with the
reservation invariant: succeeded plus open refunds never exceed the captured amount.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from domain.client_scope import in_scope, no_payment_in_scope
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.refund_rules import refusal_for_refund
from domain.refund_view import RefundView
from domain.refunds import RefundPayment, RefundStatus
from domain.status import PaymentStatus
from persistence.claims import is_claimable, new_claim
from persistence.outbox import OutboxMessage
from persistence.refund_store import (
    ClaimedRefund,
    OpenRefund,
    RefundBegin,
    RefundEventBuilder,
    RefundExisting,
    RefundRefused,
    RefundStarted,
)
from tests.support.fake_database import OPEN_REFUND, FakeRefundRow, FakeStore


class FakeRefundStore(FakeStore):
    """Refunds in ``db``, reserving from and settling into their payment's totals."""

    def row(self, refund_id: str) -> FakeRefundRow:
        return self.db.refunds[refund_id]

    def take_over(self, refund_id: str) -> str:
        return self.row(refund_id).claim.take_over(self._now(), self.db.lease)

    async def begin(self, command: RefundPayment, event: RefundEventBuilder) -> RefundBegin:
        await self._enter("begin", command.refund_id)
        now = self._now()
        parameters_hash = command.parameters_fingerprint()
        known = self.db.refunds.get(command.refund_id)
        row = self.db.payments.get(command.payment_request_id)
        foreign = row is not None and not in_scope(row.view.client_id, command.client_id)
        if known is not None and not foreign:
            charged = self.db.payments.get(known.view.payment_request_id)
            return RefundExisting(
                known.view,
                known.view.parameters_hash == parameters_hash,
                None if charged is None else charged.view.provider_reference,
            )
        if row is None or foreign or row.view.order_id != command.order_id:
            unknown = no_payment_in_scope()
            self.db.outbox.append(event(_refused(command, None, unknown, now), None))
            return RefundRefused(unknown, None)
        payment = row.view
        remaining = (
            payment.amount.minor_units - payment.refunded_minor - payment.refund_reserved_minor
        )
        error = refusal_for_refund(
            status=payment.status,
            payment_currency=payment.amount.currency,
            remaining_minor=remaining,
            requested=command.amount,
        )
        if error is None and payment.provider_reference is None:
            error = PaygateError(ErrorCode.PAYMENT_NOT_REFUNDABLE, "no provider reference")
        amount = command.amount or (
            Money(remaining, payment.amount.currency) if remaining > 0 else None
        )
        if error is not None:
            view = dataclasses.replace(
                _refused(command, amount, error, now), provider=payment.provider
            )
            self.db.refunds[view.refund_id] = FakeRefundRow(view)
            self.db.outbox.append(event(view, self.db.standing(payment.payment_request_id)))
            return RefundRefused(error, view)
        assert amount is not None
        row.update(refund_reserved_minor=payment.refund_reserved_minor + amount.minor_units)
        view = RefundView(
            refund_id=command.refund_id,
            payment_request_id=command.payment_request_id,
            order_id=command.order_id,
            idempotency_key=command.idempotency_key,
            amount=amount,
            reason=command.reason,
            status=RefundStatus.PROCESSING,
            provider=payment.provider,
            provider_reference=None,
            error=None,
            created_at=now,
            updated_at=now,
            parameters_hash=parameters_hash,
        )
        claim = new_claim(now, self.db.lease)
        refund = FakeRefundRow(view)
        refund.claim.hold(claim)
        self.db.refunds[view.refund_id] = refund
        assert payment.provider_reference is not None
        return RefundStarted(view, payment.provider_reference, claim)

    async def claim(self, refund_id: str) -> ClaimedRefund | None:
        await self._enter("claim", refund_id)
        row = self.db.refunds.get(refund_id)
        if row is None or row.view.status not in OPEN_REFUND:
            return None
        claim = row.claim.take(self._now(), self.db.lease)
        return None if claim is None else ClaimedRefund(claim, row.view)

    async def renew(self, refund_id: str, claim: str) -> bool:
        await self._enter("renew", refund_id)
        return self.row(refund_id).claim.renew(claim, self._now() + self.db.lease)

    async def release(self, refund_id: str, claim: str) -> None:
        await self._enter("release", refund_id)
        self.row(refund_id).claim.release(claim)

    async def finish(
        self,
        refund_id: str,
        *,
        claim: str,
        status: RefundStatus,
        provider_reference: str | None,
        error: ErrorInfo | None,
        event: RefundEventBuilder,
    ) -> bool:
        await self._enter("finish", refund_id)
        if status is RefundStatus.PROCESSING:
            raise ValueError("processing is not an outcome")
        row = self.row(refund_id)
        movable = (RefundStatus.PROCESSING,) if status is RefundStatus.PENDING else OPEN_REFUND
        if row.view.status not in movable or not row.claim.held_by(claim):
            row.claim.release(claim)
            return False
        row.view = dataclasses.replace(
            row.view,
            status=status,
            provider_reference=provider_reference,
            error=error,
            updated_at=self._now(),
        )
        row.claim.clear()
        self._move_totals(row.view, status)
        self.db.outbox.append(event(row.view, self.db.standing(row.view.payment_request_id)))
        return True

    def _move_totals(self, refund: RefundView, status: RefundStatus) -> None:
        """The reservation becomes refunded (succeeded) or is released (failed)."""
        if status is RefundStatus.PENDING:
            return
        assert refund.amount is not None
        payment = self.db.payments[refund.payment_request_id]
        amount = refund.amount.minor_units
        view = payment.view
        if view.refund_reserved_minor < amount:
            raise RuntimeError("no reservation for this refund")
        if status is RefundStatus.FAILED:
            payment.update(refund_reserved_minor=view.refund_reserved_minor - amount)
            return
        refunded = view.refunded_minor + amount
        payment.update(
            refunded_minor=refunded,
            refund_reserved_minor=view.refund_reserved_minor - amount,
            status=PaymentStatus.REFUNDED
            if refunded >= view.amount.minor_units
            else PaymentStatus.PARTIALLY_REFUNDED,
        )

    async def enqueue(self, message: OutboxMessage) -> None:
        await self._enter("enqueue", message.key)
        self.db.outbox.append(message)

    async def get(self, refund_id: str) -> RefundView | None:
        row = self.db.refunds.get(refund_id)
        return None if row is None else row.view

    async def republish(
        self, refund_id: str, event: RefundEventBuilder, *, final_only: bool = False
    ) -> RefundView | None:
        await self._enter("republish", refund_id)
        row = self.db.refunds.get(refund_id)
        if row is None or (final_only and row.view.status in OPEN_REFUND):
            return None
        self.db.outbox.append(event(row.view, self.db.standing(row.view.payment_request_id)))
        return row.view

    async def open_refunds(self, updated_before: datetime, limit: int) -> list[OpenRefund]:
        await self._enter("open_refunds", "")
        now = self._now()
        found = [
            OpenRefund(
                row.view,
                self.db.payments[row.view.payment_request_id].view.provider_reference or "",
            )
            for row in self.db.refunds.values()
            if row.view.status in OPEN_REFUND
            and row.view.updated_at < updated_before
            and is_claimable(row.claim.token, row.claim.expires_at, now)
        ]
        return sorted(found, key=lambda item: item.refund.updated_at)[:limit]


def _refused(
    command: RefundPayment, amount: Money | None, error: PaygateError, now: datetime
) -> RefundView:
    return RefundView(
        refund_id=command.refund_id,
        payment_request_id=command.payment_request_id,
        order_id=command.order_id,
        idempotency_key=command.idempotency_key,
        amount=amount,
        reason=command.reason,
        status=RefundStatus.FAILED,
        provider=None,
        provider_reference=None,
        error=ErrorInfo.from_error(error),
        created_at=now,
        updated_at=now,
        parameters_hash=command.parameters_fingerprint(),
    )
