"""``paygate reconcile settle --failed`` against a provider whose status search lags, on
SQLite and PostgreSQL.

A withheld payment was re-sent under its key until its provider's window less the margin
(domain.resend_window): a re-send made just before that may have charged, and a provider
declaring a search lag (Stripe: two hours) need not show that charge until the lag has
passed. The operator's command runs from the moment the payment is withheld; failing it
then, on a "nothing under the key" that is not final yet, recorded "nothing was charged"
for a payment whose money was taken, and lifted its order's protection for a second charge.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from consumer.outcome import Outcome
from domain.errors import ErrorCode, PaygateError
from domain.resend_window import RESEND_MARGIN
from domain.status import PaymentStatus
from persistence.payment_store import PaymentStore
from providers.errors import ProviderTimeoutError
from providers.port import ChargeOutcome, ChargeRequest, ChargeStatus
from tests.integration.test_operator_settlement import (
    REASON,
    WINDOW,
    LaggingAcquirer,
    Rig,
    events_of,
    payment_of,
)
from tests.support.builders import create_payment
from tests.support.clock import Clock

pytestmark = pytest.mark.integration

LAG = timedelta(hours=2)


class DeclaredLagAcquirer(LaggingAcquirer):
    """Declares a search lag of LAG and uses all of it: a charge shows in ``charge_status``
    only LAG after it was made. Its first call never arrives (a timeout on the way); every
    later one lands (once per key, as the provider's idempotency makes it) and times out."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self._clock = clock
        self.charged_at: dict[str, datetime] = {}

    @property
    def status_search_lag(self) -> timedelta:
        return LAG

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        self.charges.append(request.attempt_key)
        if len(self.charges) > 1:
            self.charged_at.setdefault(request.attempt_key, self._clock.now)
        raise ProviderTimeoutError(self.name, "no answer in time")

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        self.status_queries.append(attempt_key)
        at = self.charged_at.get(attempt_key)
        if at is None or self._clock.now < at + LAG:
            return None  # not made, or not in the search index yet
        return ChargeOutcome(ChargeStatus.SUCCEEDED, "ch_late")


async def test_a_charge_the_search_may_still_hide_is_not_failed_by_the_operator(
    store: PaymentStore, clock: Clock, engine
):
    acquirer = DeclaredLagAcquirer(clock)
    rig = Rig(store, clock, acquirer)
    command = create_payment()
    pid = command.payment_request_id
    began = clock.now
    assert await rig.handler.handle(command) is Outcome.PENDING  # never arrived

    # The last re-send the window allows: it lands, and times out again.
    clock.now = began + WINDOW - RESEND_MARGIN - timedelta(minutes=1)
    assert (await rig.reconciler.run_once()).still_pending == 1
    assert acquirer.charges == [f"{pid}-a1"] * 2
    assert f"{pid}-a1" in acquirer.charged_at

    # Two minutes later it is withheld, and the search does not show the charge yet.
    clock.now += timedelta(minutes=2)
    assert (await rig.reconciler.run_once()).still_pending == 1
    events = len(await events_of(engine, pid))

    with pytest.raises(PaygateError) as refused:
        await rig.settlement.settle(pid, fail_reason=REASON)

    assert refused.value.code is ErrorCode.NOT_WITHHELD
    assert "search" in refused.value.message
    payment = await payment_of(store, pid)
    assert payment.status is PaymentStatus.PENDING  # not "failed: nothing was charged"
    assert len(await events_of(engine, pid)) == events  # nothing published
    assert await store.claim(pid) is not None  # the claim was given back

    # Once the lag after the last possible call has passed, the provider's word is final:
    # here the charge shows, and it is what the settlement records.
    clock.now = began + WINDOW + LAG
    settled = await rig.settlement.settle(pid, fail_reason=REASON)

    assert (settled.action, settled.outcome) == ("recorded_provider_answer", "succeeded")
    assert (await payment_of(store, pid)).status is PaymentStatus.SUCCEEDED
    assert acquirer.charges == [f"{pid}-a1"] * 2  # never sent again


async def test_past_the_lag_a_silent_provider_lets_the_operator_fail_it(
    store: PaymentStore, clock: Clock
):
    acquirer = DeclaredLagAcquirer(clock)
    rig = Rig(store, clock, acquirer)
    command = create_payment()
    pid = command.payment_request_id
    began = clock.now
    assert await rig.handler.handle(command) is Outcome.PENDING  # never arrived, never re-sent

    clock.now = began + WINDOW + LAG
    settled = await rig.settlement.settle(pid, fail_reason=REASON)

    assert (settled.action, settled.outcome) == ("failed_by_operator", "failed")
    assert (await payment_of(store, pid)).status is PaymentStatus.FAILED
