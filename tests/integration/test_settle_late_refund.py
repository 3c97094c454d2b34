"""``paygate reconcile settle --failed`` on a refund whose last re-send is still on its way
to the provider, on SQLite and PostgreSQL.

A refund is withheld from its provider's window less the margin (domain.resend_window): the
reconciler's last re-send may begin just before that, and the margin is there because such
a call can still reach the provider after it (its retries; a request the provider reads
after its sender timed out). Failed then on the provider's "no refund under the key", the
refund's amount was released while the refund was on its way: refunded again, the customer
got it twice, and nothing looks at a failed refund's key again.
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

# How long after a re-send the provider reads it (a queue at the provider during the
# incident that timed the call out): well inside the margin.
READ_LATE = timedelta(minutes=5)


class LateRefundAcquirer(LaggingAcquirer):
    """Charges answer at once. A refund's first call never arrives; a re-send times out
    and is read by the provider READ_LATE after it was sent: only from then does
    ``refund_status`` (the provider's own list, no index) show the refund."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(charge_times_out=False)
        self._clock = clock
        self.refunded_at: dict[str, datetime] = {}

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        self.refunds.append(request.refund_key)
        if len(self.refunds) > 1:
            self.refunded_at.setdefault(request.refund_key, self._clock.now + READ_LATE)
        raise ProviderTimeoutError(self.name, "no answer in time")

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
        self.status_queries.append(refund_key)
        at = self.refunded_at.get(refund_key)
        if at is None or self._clock.now < at:
            return None
        return RefundOutcome(ProviderRefundStatus.SUCCEEDED, "re_late")


async def test_a_refund_whose_last_resend_may_still_land_is_not_failed(
    store: PaymentStore, clock: Clock
):
    acquirer = LateRefundAcquirer(clock)
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

    # The last re-send the window allows: it times out, and the provider reads it later.
    clock.now = began + WINDOW - RESEND_MARGIN - timedelta(minutes=1)
    assert await reconciler.run_once() == 1
    assert acquirer.refunds == [refund.refund_id] * 2

    # Withheld now; the provider has not read the re-send yet.
    clock.now += timedelta(minutes=2)
    assert await reconciler.run_once() == 1
    with pytest.raises(PaygateError) as refused:
        await settlement.settle(refund.refund_id, fail_reason=REASON)

    assert refused.value.code is ErrorCode.NOT_WITHHELD
    assert "run the command again" in refused.value.message
    stored = await refund_store.get(refund.refund_id)
    assert stored is not None
    assert stored.status is RefundStatus.PENDING
    # Still reserved: no second refund of these 3,000 can be made meanwhile.
    assert (await payment_of(store, command.payment_request_id)).refund_reserved_minor == 3_000

    # At the window's end every call of the key has been read: here the refund was made,
    # and that is what the settlement records.
    clock.now = began + WINDOW
    settled = await settlement.settle(refund.refund_id, fail_reason=REASON)

    assert (settled.action, settled.outcome) == ("recorded_provider_answer", "succeeded")
    payment = await payment_of(store, command.payment_request_id)
    assert (payment.refund_reserved_minor, payment.refunded_minor) == (0, 3_000)
    assert acquirer.refunds == [refund.refund_id] * 2  # never sent again
