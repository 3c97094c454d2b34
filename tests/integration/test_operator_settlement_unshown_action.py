"""``paygate reconcile settle`` of a payment whose provider waits for a payer paygate has no
action to show, on SQLite and PostgreSQL.

The provider double opens a trade that waits for its payer, and its status query, as
Alipay's, does not repeat the action. Either the charge's answer was lost (the payment
``pending``), or it came without an action (``requires_action``, no action stored). The
reconciler re-sends the key to learn the action; past the provider's idempotency window it
withholds that re-send: only an operator can end the payment. Before, the settlement refused
it ``not_withheld`` ("its provider waits for the payer", or "it is requires_action"), which
was neither true (the reconciler reported it withheld) nor left the operator a way. Now,
without a failure asked, nothing changes (``left_withheld``); asked to fail it, the provider
closes the trade first and its answer is recorded (``closed_by_operator``: expired), so a
payer cannot pay a payment recorded as not paid.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.payment_reconciler import PaymentReconciler
from consumer.payment_settlement import PaymentSettlement
from domain.errors import ErrorCode, PaygateError
from domain.next_action import NextAction, NextActionType
from domain.status import PaymentStatus
from persistence.payment_store import PaymentStore
from persistence.stray_store import StrayStore
from providers.charge_only import ChargeOnlyProvider
from providers.errors import ProviderTimeoutError
from providers.port import ChargeOutcome, ChargeRequest, ChargeStatus
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import ACCOUNT_KEY, create_payment
from tests.support.clock import Clock

pytestmark = pytest.mark.integration

WINDOW = timedelta(hours=24)
PAST_THE_WINDOW = WINDOW + timedelta(hours=1)
REASON = "payer never shown the trade; provider dashboard shows it open (ticket OPS-77)"
ACTION = NextAction(
    NextActionType.QR_CODE, datetime(2100, 1, 1, tzinfo=UTC), qr_code="https://qr.example/t"
)


class UnshownTrades(ChargeOnlyProvider):
    """Opens a trade that waits for its payer; its status query never repeats the action.
    ``answers_charge``: the charge answers (without an action) rather than timing out.
    ``shows_action``: the status query does carry the action."""

    def __init__(self, *, answers_charge: bool = False, shows_action: bool = False) -> None:
        super().__init__()
        self._answers_charge = answers_charge
        self.shows_action = shows_action
        self.charges: list[str] = []
        self.closes: list[str] = []

    @property
    def name(self) -> str:
        return "unshown"

    @property
    def idempotency_window(self) -> timedelta | None:
        return WINDOW

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        self.charges.append(request.attempt_key)
        waiting = ChargeOutcome(ChargeStatus.REQUIRES_ACTION, f"trade_{request.attempt_key}")
        self.outcomes.setdefault(request.attempt_key, waiting)
        if self._answers_charge:
            return waiting
        raise ProviderTimeoutError(self.name, "the trade opened, its answer was lost")

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        found = self.outcomes.get(attempt_key)
        if found is None or found.status is not ChargeStatus.REQUIRES_ACTION:
            return found
        if self.shows_action:
            return ChargeOutcome(
                ChargeStatus.REQUIRES_ACTION, found.provider_reference, next_action=ACTION
            )
        return found

    async def close_charge(self, attempt_key: str) -> ChargeOutcome | None:
        self.closes.append(attempt_key)
        found = self.outcomes[attempt_key]
        closed = ChargeOutcome(ChargeStatus.EXPIRED, found.provider_reference)
        self.outcomes[attempt_key] = closed
        return closed


class Rig:
    def __init__(self, store: PaymentStore, clock: Clock, provider: UnshownTrades) -> None:
        self.store = store
        self.clock = clock
        self.provider = provider
        providers = Providers.of(provider)
        events = PaymentEvents(PaymentMessages.bundled(), "payments.results")
        self.handler = PaymentCommandHandler(
            store=store,
            providers=providers,
            router=Router.catch_all(provider.name),
            events=events,
            account_key=ACCOUNT_KEY,
            metrics=Metrics(),
            clock=clock,
        )
        self.reconciler = PaymentReconciler(
            store=store,
            handler=self.handler,
            metrics=Metrics(),
            min_age=timedelta(seconds=30),
            clock=clock,
        )
        self.settlement = PaymentSettlement(
            store=store,
            providers=providers,
            events=events,
            strays=StrayStore(store.engine, store.writes, clock),
            clock=clock,
        )

    async def withheld(self, first: Outcome, status: PaymentStatus) -> str:
        """A payment whose trade waits for a payer with no action, withheld by a pass."""
        command = create_payment()
        assert await self.handler.handle(command) is first
        pid = command.payment_request_id
        self.clock.now += PAST_THE_WINDOW
        report = await self.reconciler.run_once()
        assert (report.checked, report.still_pending) == (1, 1)
        assert self.provider.charges == [f"{pid}-a1"]  # withheld: never sent again
        assert await self.status(pid) is status
        return pid

    async def status(self, payment_id: str) -> PaymentStatus:
        payment = await self.store.get_payment(payment_id)
        assert payment is not None
        return payment.status


@pytest.mark.parametrize(
    ("answers_charge", "first", "status"),
    [
        (False, Outcome.PENDING, PaymentStatus.PENDING),
        (True, Outcome.REQUIRES_ACTION, PaymentStatus.REQUIRES_ACTION),
    ],
    ids=["answer_lost", "answered_without_action"],
)
async def test_a_withheld_payment_whose_payer_has_no_action_is_settled_by_closing_its_trade(
    store: PaymentStore, clock: Clock, answers_charge, first, status
):
    rig = Rig(store, clock, UnshownTrades(answers_charge=answers_charge))
    pid = await rig.withheld(first, status)

    # Without a failure asked: nothing changes, the trade stays open.
    left = await rig.settlement.settle(pid)
    assert (left.action, left.outcome) == ("left_withheld", None)
    assert rig.provider.closes == []
    assert await rig.status(pid) is status

    settled = await rig.settlement.settle(pid, fail_reason=REASON)

    assert (settled.action, settled.outcome) == ("closed_by_operator", "expired")
    assert rig.provider.closes == [f"{pid}-a1"]
    payment = await store.get_payment(pid)
    assert payment is not None
    assert payment.status is PaymentStatus.EXPIRED
    assert payment.error is not None
    assert payment.error.code is ErrorCode.PAYMENT_EXPIRED
    assert await store.claim(pid) is None  # final: nothing left to claim


async def test_a_payer_shown_an_action_by_the_provider_is_the_reconcilers(
    store: PaymentStore, clock: Clock
):
    rig = Rig(store, clock, UnshownTrades())
    pid = await rig.withheld(Outcome.PENDING, PaymentStatus.PENDING)
    rig.provider.shows_action = True  # the provider now repeats the action

    with pytest.raises(PaygateError) as refused:
        await rig.settlement.settle(pid, fail_reason=REASON)

    assert refused.value.code is ErrorCode.NOT_WITHHELD
    assert "shown an action" in refused.value.message
    assert rig.provider.closes == []
    assert await rig.status(pid) is PaymentStatus.PENDING
    assert await store.claim(pid) is not None  # the claim was given back
