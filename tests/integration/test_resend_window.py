"""The reconcilers never re-send a payment attempt or a refund whose key the provider no
longer honours, on SQLite and PostgreSQL.

The provider double keeps each key for its idempotency window only (as Stripe prunes keys
24 hours old): a call under a key it has forgotten is a new charge. Its first call lands but
times out, and its status query does not show it (Stripe's search lags). Inside the window
the reconciler's re-send is answered with the first charge; past it, a re-send would be a
second charge, so the payment must stay pending for an operator instead.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.payment_reconciler import PaymentReconciler
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from consumer.refund_reconciler import RefundReconciler
from domain.money import Money
from domain.refunds import RefundPayment, RefundStatus
from domain.resend_window import RESEND_MARGIN
from domain.status import PaymentStatus
from persistence.payment_store import PaymentStore
from persistence.refund_store import RefundStore
from persistence.tables import provider_attempts
from providers.charge_only import ChargeOnlyProvider
from providers.errors import ProviderTimeoutError
from providers.port import (
    ChargeOutcome,
    ChargeRequest,
    ChargeStatus,
    ProviderRefundStatus,
    RefundOutcome,
    RefundRequest,
)
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import ACCOUNT_KEY, create_payment, unique
from tests.support.clock import Clock

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()

WINDOW = timedelta(hours=24)


class ForgetfulAcquirer(ChargeOnlyProvider):
    """Honours a key for WINDOW after its first call, then forgets it. Every call that
    lands is in ``charges``; the first one times out, and ``charge_status`` never finds a
    charge (a search index lagging behind)."""

    def __init__(self, clock: Clock, *, charge_times_out: bool = True) -> None:
        super().__init__()
        self._clock = clock
        self._keys: dict[str, tuple[datetime, ChargeOutcome]] = {}
        self.charges: list[str] = []
        self.timed_out = not charge_times_out
        self._refund_keys: dict[str, tuple[datetime, RefundOutcome]] = {}
        self.refunds: list[str] = []

    @property
    def name(self) -> str:
        return "forgetful"

    @property
    def idempotency_window(self) -> timedelta | None:
        return WINDOW

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        key = request.attempt_key
        known = self._keys.get(key)
        if known is not None and self._clock() - known[0] < WINDOW:
            return known[1]  # the same key, honoured: the first answer again
        outcome = ChargeOutcome(ChargeStatus.SUCCEEDED, f"ch_{len(self.charges) + 1}")
        self.charges.append(key)
        self._keys[key] = (self._clock(), outcome)
        if not self.timed_out:
            self.timed_out = True
            raise ProviderTimeoutError(self.name, "landed, but no answer in time")
        return outcome

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        return None

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        """The same for refunds: honoured for WINDOW, the first one lands and times out."""
        key = request.refund_key
        known = self._refund_keys.get(key)
        if known is not None and self._clock() - known[0] < WINDOW:
            return known[1]
        outcome = RefundOutcome(ProviderRefundStatus.SUCCEEDED, f"re_{len(self.refunds) + 1}")
        self.refunds.append(key)
        self._refund_keys[key] = (self._clock(), outcome)
        if len(self.refunds) == 1:
            raise ProviderTimeoutError(self.name, "landed, but no answer in time")
        return outcome

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
        return None


def payments_over(
    acquirer: ForgetfulAcquirer,
    store: PaymentStore,
    metrics: Metrics,
    clock: Clock,
    **options: Any,
) -> PaymentCommandHandler:
    """A payment handler over ``acquirer`` alone (not the shared fixture's sandbox), so its
    bounded idempotency window is the one the handler and the reconciler see; ``options``
    as the handler takes them."""
    return PaymentCommandHandler(
        store=store,
        providers=Providers.of(acquirer),
        router=Router.catch_all(acquirer.name),
        events=PaymentEvents(MESSAGES, "payments.results"),
        account_key=ACCOUNT_KEY,
        metrics=metrics,
        clock=clock,
        **options,
    )


async def attempt_open(engine, payment_id: str) -> bool:
    async with engine.connect() as conn:
        finished = (
            await conn.execute(
                select(provider_attempts.c.finished_at).where(
                    provider_attempts.c.payment_id == payment_id
                )
            )
        ).scalar_one()
    return finished is None


@pytest.mark.parametrize(
    ("age", "status", "charges", "withheld"),
    [
        (WINDOW - RESEND_MARGIN - timedelta(minutes=1), PaymentStatus.SUCCEEDED, 1, None),
        # Within the margin: the provider would still answer, but a re-send that takes long
        # (back-off, skew) could land after it forgot the key.
        (WINDOW - RESEND_MARGIN, PaymentStatus.PENDING, 1, 1.0),
        # Past the window: a re-send would be a second charge.
        (WINDOW + timedelta(hours=1), PaymentStatus.PENDING, 1, 1.0),
    ],
    ids=[
        "inside-the-window-resent-once-charged",
        "in-the-margin-left-pending",
        "past-the-window-left-pending",
    ],
)
async def test_the_reconciler_resends_only_inside_the_providers_idempotency_window(
    store, engine, clock, age, status, charges, withheld
):
    # Built here (not the shared fixture) around a provider with a bounded window.
    acquirer = ForgetfulAcquirer(clock)
    metrics = Metrics()
    handler = payments_over(acquirer, store, metrics, clock, abandon_after=timedelta(hours=4))
    reconciler = PaymentReconciler(
        store=store, handler=handler, metrics=metrics, min_age=timedelta(seconds=30), clock=clock
    )
    command = create_payment()
    pid = command.payment_request_id
    assert await handler.handle(command) is Outcome.PENDING
    assert acquirer.charges == [f"{pid}-a1"]  # it landed; nobody knows

    clock.now += age
    report = await reconciler.run_once()

    assert report.checked == 1
    # One charge, whatever the age: never a second one under a forgotten key.
    assert len(acquirer.charges) == charges
    payment = await store.get_payment(pid)
    assert payment.status is status
    assert await attempt_open(engine, pid) is (status is PaymentStatus.PENDING)
    assert (
        metrics.registry.get_sample_value(
            "paygate_resends_withheld_total", {"provider": "forgetful", "operation": "payment"}
        )
        == withheld
    )
    if status is PaymentStatus.PENDING:
        assert report.still_pending == 1
        # The claim is given back: the next pass finds it again, and again sends nothing.
        again = await reconciler.run_once()
        assert (again.checked, again.still_pending, len(acquirer.charges)) == (1, 1, 1)


@pytest.mark.parametrize(
    ("age", "status", "withheld"),
    [
        (WINDOW - RESEND_MARGIN - timedelta(minutes=1), RefundStatus.SUCCEEDED, None),
        (WINDOW + timedelta(hours=1), RefundStatus.PENDING, 1.0),
    ],
    ids=["inside-the-window-resent-once-refunded", "past-the-window-left-pending"],
)
async def test_the_refund_reconciler_resends_only_inside_the_providers_idempotency_window(
    store, engine, clock, age, status, withheld
):
    acquirer = ForgetfulAcquirer(clock, charge_times_out=False)
    metrics = Metrics()
    payments = payments_over(acquirer, store, metrics, clock)
    refund_store = RefundStore(engine, store.writes, clock)
    refunds = RefundCommandHandler(
        store=refund_store,
        providers=Providers.of(acquirer),
        events=RefundEvents(MESSAGES, "payments.results"),
        metrics=metrics,
        clock=clock,
    )
    reconciler = RefundReconciler(
        store=refund_store, handler=refunds, metrics=metrics, min_age=timedelta(0), clock=clock
    )
    command = create_payment(amount=Money(10_000, "EUR"))
    assert await payments.handle(command) is Outcome.SUCCEEDED
    refund = RefundPayment.create(
        idempotency_key=unique("refund"),
        payment_request_id=command.payment_request_id,
        order_id=command.order_id,
        amount=Money(3_000, "EUR"),
        reason="requested_by_customer",
        requested_at=clock.now,
    )
    assert await refunds.handle(refund) is Outcome.PENDING
    assert acquirer.refunds == [refund.refund_id]  # it landed; nobody knows

    clock.now += age
    assert await reconciler.run_once() == 1

    # One refund, whatever the age: never a second one under a forgotten key.
    assert acquirer.refunds == [refund.refund_id]
    stored = await refund_store.get(refund.refund_id)
    assert stored is not None
    assert stored.status is status
    assert (
        metrics.registry.get_sample_value(
            "paygate_resends_withheld_total", {"provider": "forgetful", "operation": "refund"}
        )
        == withheld
    )
