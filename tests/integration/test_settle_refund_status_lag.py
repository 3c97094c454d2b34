"""``paygate reconcile settle --failed`` on a refund whose provider's refund status lags
behind its refunds, on SQLite and PostgreSQL.

A provider declares how long its ``refund_status`` may still answer "no refund under the
key" after the refund was made (``refund_status_lag``), as it declares
``status_search_lag`` for charges. Before, a refund's silence was taken as final at the
window's end, whatever the provider: a refund made by the last re-send, not yet shown by a
lagging status, was failed by the operator, its amount released, and refunded again later.
Now the settlement waits for the declared lag after the window's end too.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from consumer.outcome import Outcome
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from consumer.refund_reconciler import RefundReconciler
from consumer.refund_settlement import RefundSettlement
from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.refunds import RefundPayment, RefundStatus
from domain.resend_window import RESEND_MARGIN
from persistence.payment_store import PaymentStore
from persistence.refund_store import RefundStore
from providers.errors import ProviderTimeoutError
from providers.port import ProviderRefundStatus, RefundOutcome, RefundRequest
from providers.registry import Providers
from telemetry.metrics import Metrics
from tests.integration.test_operator_settlement import (
    MESSAGES,
    REASON,
    WINDOW,
    LaggingAcquirer,
    Rig,
    payment_of,
)
from tests.support.builders import create_payment, unique
from tests.support.clock import Clock

pytestmark = pytest.mark.integration

# What the provider declares, and how long its status really trails a refund (less).
DECLARED_LAG = timedelta(hours=2)
HIDDEN_FOR = timedelta(minutes=90)


class LaggingRefundStatus(LaggingAcquirer):
    """Charges answer at once. A refund's first call never arrives; a re-send is made at
    once but times out, and ``refund_status`` shows a refund only HIDDEN_FOR after it was
    made (a status read from an index behind the refunds)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(charge_times_out=False)
        self._clock = clock
        self.refunded_at: dict[str, datetime] = {}

    @property
    def refund_status_lag(self) -> timedelta:
        return DECLARED_LAG

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        self.refunds.append(request.refund_key)
        if len(self.refunds) > 1:
            self.refunded_at.setdefault(request.refund_key, self._clock.now)
        raise ProviderTimeoutError(self.name, "no answer in time")

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
        self.status_queries.append(refund_key)
        at = self.refunded_at.get(refund_key)
        if at is None or self._clock.now < at + HIDDEN_FOR:
            return None
        return RefundOutcome(ProviderRefundStatus.SUCCEEDED, "re_lagging")


async def test_a_refund_is_not_failed_before_its_providers_refund_status_lag_has_passed(
    store: PaymentStore, clock: Clock
):
    acquirer = LaggingRefundStatus(clock)
    metrics = Metrics()
    refund_store = RefundStore(store.engine, store.writes, clock)
    events = RefundEvents(MESSAGES, "payments.results")
    providers = Providers.of(acquirer)
    handler = RefundCommandHandler(
        store=refund_store, providers=providers, events=events, metrics=metrics, clock=clock
    )
    reconciler = RefundReconciler(
        store=refund_store, handler=handler, metrics=metrics, min_age=timedelta(0), clock=clock
    )
    settlement = RefundSettlement(
        store=refund_store, payments=store, providers=providers, events=events, clock=clock
    )
    command = create_payment(amount=Money(10_000, "EUR"))
    assert await Rig(store, clock, acquirer).handler.handle(command) is Outcome.SUCCEEDED
    refund = RefundPayment.create(
        idempotency_key=unique("refund"),
        payment_request_id=command.payment_request_id,
        order_id=command.order_id,
        amount=Money(3_000, "EUR"),
        reason="requested_by_customer",
        requested_at=clock.now,
    )
    began = clock.now
    assert await handler.handle(refund) is Outcome.PENDING  # never arrived

    # The last re-send the window allows: the refund is made, its answer lost.
    clock.now = began + WINDOW - RESEND_MARGIN - timedelta(minutes=1)
    assert await reconciler.run_once() == 1
    assert acquirer.refunds == [refund.refund_id] * 2
    clock.now += timedelta(minutes=2)
    assert await reconciler.run_once() == 1  # withheld: never sent again

    # Past the window's end, within the declared lag: the status does not show it yet.
    clock.now = began + WINDOW + timedelta(minutes=1)
    with pytest.raises(PaygateError) as refused:
        await settlement.settle(refund.refund_id, fail_reason=REASON)

    assert refused.value.code is ErrorCode.NOT_WITHHELD
    assert (began + WINDOW + DECLARED_LAG).isoformat() in refused.value.message
    stored = await refund_store.get(refund.refund_id)
    assert stored is not None
    assert stored.status is RefundStatus.PENDING
    assert (await payment_of(store, command.payment_request_id)).refund_reserved_minor == 3_000

    # Once the lag has passed, the status shows the refund made, and that is recorded.
    clock.now = began + WINDOW + DECLARED_LAG
    settled = await settlement.settle(refund.refund_id, fail_reason=REASON)

    assert (settled.action, settled.outcome) == ("recorded_provider_answer", "succeeded")
    payment = await payment_of(store, command.payment_request_id)
    assert (payment.refund_reserved_minor, payment.refunded_minor) == (0, 3_000)
    assert acquirer.refunds == [refund.refund_id] * 2
