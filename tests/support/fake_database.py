"""The rows the fake stores share, as the SQL stores share one database, and what every fake
records (see tests.support.fake_stores).

Payments carry one claim, which covers their attempts *and* their capture, as the payments
table's claim columns do; refunds carry their own.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from domain.payment_view import PaymentView
from domain.payments import CreatePayment
from domain.refund_view import RefundView
from domain.refunds import RefundStatus
from domain.status import PaymentStatus
from persistence.attempts import ATTEMPT_STARTED
from persistence.outbox import OutboxMessage
from persistence.refund_store import PaymentRefunds
from tests.support.fake_claims import ClaimSlot

LEASE = timedelta(seconds=30)
# Statuses in which a payment's attempts, or a refund, may be claimed.
WAITING = (PaymentStatus.PENDING, PaymentStatus.PROCESSING)
CLAIMABLE = (*WAITING, PaymentStatus.REQUIRES_ACTION)
OPEN_REFUND = (RefundStatus.PROCESSING, RefundStatus.PENDING)


@dataclass
class FakeAttempt:
    attempt_key: str
    attempt_no: int
    provider: str
    created_at: datetime
    opened_by: str | None
    sealed_request: bytes | None = None
    status: str = ATTEMPT_STARTED
    finished_at: datetime | None = None
    provider_reference: str | None = None
    last_sent_at: datetime | None = None
    resend_count: int = 0


@dataclass
class FakePaymentRow:
    view: PaymentView
    claim: ClaimSlot = field(default_factory=ClaimSlot)
    generation: int = 0
    key_expired: bool = False
    attempts: list[FakeAttempt] = field(default_factory=list)
    # When the reconciler may ask about it again while requires_action (None: at once).
    next_check_at: datetime | None = None

    @property
    def latest(self) -> FakeAttempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def open_attempt(self) -> FakeAttempt | None:
        latest = self.latest
        return latest if latest is not None and latest.finished_at is None else None

    def attempt(self, attempt_key: str) -> FakeAttempt:
        return next(a for a in self.attempts if a.attempt_key == attempt_key)

    def update(self, **changes: object) -> None:
        self.view = dataclasses.replace(self.view, **changes)  # type: ignore[arg-type]


@dataclass
class FakeRefundRow:
    view: RefundView
    claim: ClaimSlot = field(default_factory=ClaimSlot)


class FakeDatabase:
    """The rows every fake store of one test sees, one clock and one claim lease."""

    def __init__(self, clock: Callable[[], datetime], *, lease: timedelta = LEASE) -> None:
        self.clock = clock
        self.lease = lease
        self.payments: dict[str, FakePaymentRow] = {}
        self.refunds: dict[str, FakeRefundRow] = {}
        self.outbox: list[OutboxMessage] = []

    def add_payment(
        self,
        command: CreatePayment,
        status: PaymentStatus,
        *,
        provider: str,
        provider_reference: str | None = None,
        account_key: bytes = b"fake-account-key",
    ) -> PaymentView:
        """A payment as earlier commands left it (a refund or a capture test starts here)."""
        view = dataclasses.replace(
            payment_view(command, account_key=account_key, provider=provider, now=self.clock()),
            status=status,
            provider_reference=provider_reference,
        )
        self.payments[view.payment_request_id] = FakePaymentRow(view)
        return view

    def standing(self, payment_id: str) -> PaymentRefunds | None:
        row = self.payments.get(payment_id)
        return None if row is None else PaymentRefunds(row.view.status, row.view.refunded_minor)


def payment_view(
    command: CreatePayment, *, account_key: bytes, provider: str, now: datetime
) -> PaymentView:
    """A new payment as the store records it: account numbers as references only."""
    return PaymentView(
        payment_request_id=command.payment_request_id,
        order_id=command.order_id,
        user_id=command.user_id,
        idempotency_key=command.idempotency_key,
        status=PaymentStatus.PROCESSING,
        amount=command.amount,
        payment_method=command.payment_method,
        payer=command.payer.ref(account_key),
        payee=command.payee.ref(account_key),
        provider=provider,
        provider_reference=None,
        error=None,
        created_at=now,
        updated_at=now,
        parameters_hash=command.parameters_fingerprint(account_key),
        client_id=command.client_id,
    )


class FakeStore:
    """What every fake records, and the hook for another worker's moves."""

    def __init__(self, db: FakeDatabase) -> None:
        self.db = db
        self.calls: list[tuple[str, str]] = []  # (method, row id), in call order
        self._before: dict[str, list[Callable[[], object]]] = {}

    @property
    def outbox(self) -> list[OutboxMessage]:
        return self.db.outbox

    @property
    def claim_lease(self) -> timedelta:
        return self.db.lease

    def called(self, method: str) -> list[str]:
        """The row ids ``method`` was called with, in order."""
        return [row_id for name, row_id in self.calls if name == method]

    def before(self, method: str, action: Callable[[], object]) -> None:
        """Run ``action`` (sync or async) once, just before the next call of ``method``."""
        self._before.setdefault(method, []).append(action)

    async def _enter(self, method: str, row_id: str) -> None:
        self.calls.append((method, row_id))
        for action in self._before.pop(method, []):
            result = action()
            if inspect.isawaitable(result):
                await result

    def _now(self) -> datetime:
        return self.db.clock()
