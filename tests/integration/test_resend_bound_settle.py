"""A payment withheld by the bound on re-sends (PAYGATE_RESEND_LIMIT) at a provider that
keeps keys for good but is not Alipay -- the sandbox acquirer, whose ledger never prunes a
key -- can be ended by an operator, on real databases (SQLite and PostgreSQL).

The provider port says ``close_charge`` answers None when the provider never received the
charge. Read by ``reconcile settle`` as "the key was not confirmed closed", such a payment
was refused for ever: the reconciler no longer re-sends it (the bound) and the operator
could not fail it, so it stayed pending, its order blocked, for good.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.payment_reconciler import PaymentReconciler
from consumer.payment_settlement import PaymentSettlement
from domain.errors import ErrorCode
from domain.status import PaymentStatus
from persistence.stray_store import StrayStore
from providers.delegating import DelegatingProvider
from providers.errors import ProviderTimeoutError
from providers.port import PaymentProvider
from providers.registry import Providers
from providers.routing import Router
from providers.sandbox import InProcessSandboxProvider
from schemas.payments import PaymentMessages
from tests.support.builders import ACCOUNT_KEY, create_payment
from tests.support.metric_samples import sample_sum

pytestmark = pytest.mark.integration

MIN_AGE = timedelta(seconds=30)
RESEND_LIMIT = 2


class LostOnTheWay(DelegatingProvider):
    """Every call that moves money is lost on its way while ``lost``: the caller times out
    and the provider got nothing. Status queries and closes always pass."""

    def __init__(self, inner: PaymentProvider) -> None:
        super().__init__(inner)
        self.lost = True

    async def _moving_money(self, call):
        if self.lost:
            raise ProviderTimeoutError(self.name, "no answer in time; outcome unknown")
        return await call()


async def test_a_payment_withheld_by_the_bound_at_the_sandbox_can_be_failed_by_an_operator(
    store, metrics, clock
):
    sandbox = InProcessSandboxProvider()
    path = LostOnTheWay(sandbox)
    providers = Providers.of(path)
    events = PaymentEvents(PaymentMessages.bundled(), "payments.results")
    handler = PaymentCommandHandler(
        store=store,
        providers=providers,
        router=Router({"*": [sandbox.name]}),
        events=events,
        account_key=ACCOUNT_KEY,
        metrics=metrics,
        clock=clock,
        resend_limit=RESEND_LIMIT,
    )
    reconciler = PaymentReconciler(
        store=store, handler=handler, metrics=metrics, min_age=MIN_AGE, clock=clock
    )
    settlement = PaymentSettlement(
        store=store,
        providers=providers,
        events=events,
        strays=StrayStore(store.engine, store.writes, clock),
        clock=clock,
        resend_limit=RESEND_LIMIT,
    )
    command = create_payment()
    pid = command.payment_request_id
    assert await handler.handle(command) is Outcome.PENDING
    for _ in range(RESEND_LIMIT + 2):
        clock.now += MIN_AGE * 2
        await reconciler.run_once()
    withheld = sample_sum(
        metrics, "paygate_resend_limit_reached_total", provider=sandbox.name, operation="payment"
    )
    assert withheld >= 1  # the bound reached: the reconciler sends it no more
    clock.now += timedelta(hours=2)  # every send of the key is long over

    settled = await settlement.settle(pid, fail_reason="lost on the way for good; OPS-3")

    assert (settled.action, settled.outcome) == ("failed_by_operator", "failed")
    failed = await store.get_payment(pid)
    assert failed is not None
    assert failed.status is PaymentStatus.FAILED
    assert failed.error is not None
    assert failed.error.code is ErrorCode.SETTLED_BY_OPERATOR
    # Never sent again afterwards, even once the path is back.
    path.lost = False
    clock.now += MIN_AGE * 2
    await reconciler.run_once()
    still = await store.get_payment(pid)
    assert still is not None
    assert still.status is PaymentStatus.FAILED
