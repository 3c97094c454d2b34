"""What the consumer's handlers and reconcilers need from the store, as Protocols.

The SQL stores of persistence implement them; unit tests pass fakes, as the facade's tests
do with http_facade/ports.py. The value types they exchange (what a begin answers, a claimed
attempt, an open refund) are the persistence layer's, which sits below this one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from domain.error_info import ErrorInfo
from domain.errors import PaygateError
from domain.money import Money
from domain.next_action import NextAction
from domain.payment_view import PaymentView
from domain.payments import CreatePayment
from domain.refund_view import RefundView
from domain.refunds import RefundPayment, RefundStatus
from domain.status import PaymentStatus
from persistence.cancel_store import CancelBegin
from persistence.capture_store import CaptureBegin
from persistence.claims import Claim
from persistence.follow_up import FollowUpStarted, PaymentEventBuilder
from persistence.group_commit import Bulk
from persistence.outbox import OutboxMessage
from persistence.outside_refund_failed import OutsideFailure
from persistence.payment_begin import BeginResult
from persistence.payment_claims import ClaimedAttempt, InDoubt
from persistence.provider_refund_store import RiseEventBuilder
from persistence.refund_store import (
    ClaimedRefund,
    LateFailure,
    OpenRefund,
    RefundBegin,
    RefundEventBuilder,
)
from persistence.stray_store import LateReversalFailure, StrayCandidate


class PaymentWrites(Protocol):
    """Payments: write-ahead, claims, outcomes (persistence.payment_store.PaymentStore)."""

    async def begin(
        self,
        command: CreatePayment,
        *,
        provider: str,
        account_key: bytes,
        refusal_event: Callable[[CreatePayment, PaygateError, datetime], OutboxMessage],
        seal: Callable[[CreatePayment], bytes] | None = None,
        along: Sequence[Bulk] = (),
    ) -> BeginResult: ...

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
    ) -> bool: ...

    async def claim(self, payment_id: str) -> ClaimedAttempt | None: ...

    @property
    def claim_lease(self) -> timedelta:
        """How long a claim written or renewed here lasts."""
        ...

    async def renew(self, payment_id: str, claim: str) -> bool: ...

    async def renew_sending(self, payment_id: str, attempt_key: str, *, claim: str) -> bool: ...

    async def uncount_unsent(self, payment_id: str, attempt_key: str) -> None: ...

    async def release(self, payment_id: str, claim: str) -> None: ...

    async def schedule_retry(self, payment_id: str, at: datetime, *, claim: str) -> bool: ...

    async def check_again_at(self, payment_id: str, at: datetime) -> None: ...

    async def next_attempt(
        self, payment_id: str, failed_attempt_key: str, provider: str, *, claim: str
    ) -> str | None: ...

    async def enqueue(self, event: OutboxMessage) -> None: ...

    async def republish(
        self, payment_id: str, event_of: Callable[[PaymentView], OutboxMessage]
    ) -> PaymentView | None: ...

    async def get_payment(self, payment_id: str) -> PaymentView | None: ...

    async def in_doubt(self, started_before: datetime, limit: int) -> list[InDoubt]: ...


class RefundWrites(Protocol):
    """Refunds: reservations, claims, outcomes (persistence.refund_store.RefundStore)."""

    async def begin(self, command: RefundPayment, event: RefundEventBuilder) -> RefundBegin: ...

    async def claim(self, refund_id: str) -> ClaimedRefund | None: ...

    @property
    def claim_lease(self) -> timedelta:
        """How long a claim written or renewed here lasts."""
        ...

    async def renew(self, refund_id: str, claim: str) -> bool: ...

    async def release(self, refund_id: str, claim: str) -> None: ...

    async def finish(
        self,
        refund_id: str,
        *,
        claim: str,
        status: RefundStatus,
        provider_reference: str | None,
        error: ErrorInfo | None,
        event: RefundEventBuilder,
    ) -> bool: ...

    async def enqueue(self, message: OutboxMessage) -> None: ...

    async def republish(
        self, refund_id: str, event: RefundEventBuilder, *, final_only: bool = False
    ) -> RefundView | None: ...

    async def get(self, refund_id: str) -> RefundView | None: ...

    async def open_refunds(self, updated_before: datetime, limit: int) -> list[OpenRefund]: ...


class RefundFailureWrites(RefundWrites, Protocol):
    """Refunds, and a provider's failure of one recorded succeeded
    (persistence.refund_store.RefundStore.fail_after_success)."""

    async def charge_reference_of(self, refund_id: str) -> str | None: ...

    async def fail_after_success(
        self,
        refund_id: str,
        *,
        provider: str,
        provider_reference: str,
        amount: Money,
        error: ErrorInfo,
        event: RefundEventBuilder,
    ) -> LateFailure: ...


class FollowUpWrites(Protocol):
    """What captures and voids share: the claim on a follow-up under way, and events
    queued on their own (persistence.follow_up_store)."""

    async def claim(self, payment_request_id: str) -> FollowUpStarted | None: ...

    @property
    def claim_lease(self) -> timedelta:
        """How long a claim written or renewed here lasts."""
        ...

    async def renew(self, payment_request_id: str, claim: str) -> bool: ...

    async def release(self, payment_request_id: str, claim: str) -> None: ...

    async def republish(
        self, payment_request_id: str, event_of: Callable[[PaymentView], OutboxMessage]
    ) -> PaymentView | None: ...

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
    ) -> bool: ...


class CaptureWrites(FollowUpWrites, Protocol):
    """Captures: the move to capturing, claims, outcomes (persistence.capture_store)."""

    async def begin(
        self,
        command: CapturePayment,
        refusal_event: Callable[[PaymentView, PaygateError], OutboxMessage],
    ) -> CaptureBegin: ...

    async def finish(
        self,
        payment_request_id: str,
        *,
        claim: str,
        captured: bool,
        error: ErrorInfo | None,
        event: PaymentEventBuilder,
    ) -> bool: ...

    async def capturing(self, updated_before: datetime, limit: int) -> list[PaymentView]: ...


class CancelWrites(FollowUpWrites, Protocol):
    """Voids: the move to canceling, claims, outcomes (persistence.cancel_store)."""

    async def begin(
        self,
        command: CancelPayment,
        refusal_event: Callable[[PaymentView, PaygateError], OutboxMessage],
    ) -> CancelBegin: ...

    async def finish(
        self,
        payment_request_id: str,
        *,
        claim: str,
        status: PaymentStatus,
        error: ErrorInfo | None,
        event: PaymentEventBuilder,
    ) -> bool: ...

    async def canceling(self, updated_before: datetime, limit: int) -> list[PaymentView]: ...


class ExpiryRecords(Protocol):
    """Authorizations whose hold may have ended (persistence.expiry_store)."""

    async def authorized(self, updated_before: datetime, limit: int) -> list[PaymentView]: ...

    async def examined(self, payment_request_id: str) -> None: ...

    async def release(
        self,
        payment_request_id: str,
        *,
        status: PaymentStatus,
        error: ErrorInfo | None,
        event: PaymentEventBuilder,
    ) -> bool: ...

    async def captured(
        self,
        payment_request_id: str,
        *,
        captured_minor: int | None,
        event: PaymentEventBuilder,
        status: PaymentStatus = PaymentStatus.SUCCEEDED,
        refunded_minor: int = 0,
    ) -> bool: ...


class ProviderRefundRecords(Protocol):
    """Refunds a provider reports on a captured payment, made outside paygate
    (persistence.provider_refund_store)."""

    async def absorb(
        self,
        payment_request_id: str,
        *,
        provider_reference: str,
        provider_refunded_minor: int,
        event: RiseEventBuilder,
        reading_at: int | None = None,
    ) -> PaymentView | None: ...

    async def outside_refund_failed(
        self,
        *,
        provider: str,
        provider_reference: str,
        charge_reference: str,
        amount: Money,
        event: PaymentEventBuilder,
        made_at: int | None = None,
        failed_at: int | None = None,
    ) -> tuple[OutsideFailure, PaymentView | None]: ...


class StrayLeads(Protocol):
    """Where a provider's word of a charge the payment does not stand on is handed to the
    stray-charge sweep (persistence.stray_store)."""

    async def reopen(self, attempt_key: str, provider: str) -> bool: ...


class StrayReversals(Protocol):
    """Where a provider's late failure of a stray charge's reversal is recorded
    (persistence.stray_store.StrayStore.reversal_failed_later)."""

    async def reversal_failed_later(
        self,
        attempt_key: str,
        provider: str,
        *,
        reversal_key: str,
        reversal_reference: str,
        error: str,
    ) -> LateReversalFailure: ...


class StrayRecords(Protocol):
    """What the stray-charge sweep reads and records (persistence.stray_store)."""

    async def candidates(self, settled_before: datetime, limit: int) -> list[StrayCandidate]: ...

    async def mark_own_charges(self, limit: int) -> int: ...

    async def ask_again_at(self, candidate: StrayCandidate, at: datetime) -> bool:
        """Read ``candidate`` again only from ``at`` (made before its question); False,
        changing nothing, when the key was reopened or verified since it was read."""
        ...

    async def mark_verified(self, candidate: StrayCandidate) -> bool:
        """False, changing nothing, when the key was reopened since ``candidate`` was read."""
        ...

    async def close_unverified(self, candidate: StrayCandidate) -> bool:
        """Close an attempt left open, not verified (its "no charge" is not final yet);
        False, changing nothing, when the key was reopened since ``candidate`` was read."""
        ...

    async def record_found(
        self, candidate: StrayCandidate, provider_reference: str
    ) -> Claim | None:
        """Record the stray charge, its reversal claimed by the caller (the claim); None
        when another sweeper recorded it."""
        ...

    async def claim_reversal(self, attempt_key: str) -> Claim | None:
        """Take the claim on the stray charge's reversal; None when its reversal is no
        longer under way or another sweeper holds the claim (then send nothing)."""
        ...

    async def renew_reversal(self, attempt_key: str, token: str) -> bool:
        """Extend the claim (before a provider call); False when it is not ``token``'s."""
        ...

    async def release_reversal(self, attempt_key: str, token: str) -> None: ...

    async def reverse_again_at(self, attempt_key: str, at: datetime, *, token: str) -> bool:
        """Read the stray charge's reversal again only from ``at`` (made before each try);
        False, changing nothing, when its reversal is no longer under way or its claim not
        ``token``'s."""
        ...

    async def note_reversal_key(
        self, attempt_key: str, reversal_key: str, *, replacing: str | None, token: str
    ) -> bool:
        """Write down the key of the reversal refund about to be sent (before it is sent),
        in place of ``replacing``; False, changing nothing, when its reversal is no longer
        under way, its claim is not ``token``'s, or another key than ``replacing`` is
        noted (another sweeper's)."""
        ...

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
        """Record the reversal's answer and release its claim; False, changing nothing,
        when it is no longer under way, its claim is not ``token``'s (taken over), or
        another key than ``noted`` is noted (another sweeper's)."""
        ...
