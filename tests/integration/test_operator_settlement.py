"""``paygate reconcile settle``'s core: a withheld payment (or refund) settled by hand, on
SQLite and PostgreSQL.

The provider double's first call lands but times out, and its status query does not show
it (a search index lagging) until the test says it does; it honours keys for WINDOW. Past
the window the reconciler withholds the payment (never re-sent, never failed); the operator
then settles it: the provider is asked once more, and only if it still holds nothing is the
payment failed, ``settled_by_operator``, its attempt left unverified so that the stray-charge
sweep still asks about the key and reverses a charge that shows only later.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.payment_reconciler import PaymentReconciler
from consumer.payment_settlement import PaymentSettlement
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from consumer.refund_reconciler import RefundReconciler
from consumer.refund_settlement import RefundSettlement
from consumer.stray_charges import StraySweep
from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.operator_settlement import SWEEP_HOLD
from domain.payment_view import PaymentView
from domain.refunds import RefundPayment, RefundStatus
from domain.status import PaymentStatus
from persistence.payment_store import PaymentStore
from persistence.refund_store import RefundStore
from persistence.stray_store import StrayStore
from persistence.tables import outbox, provider_attempts
from providers.charge_only import ChargeOnlyProvider
from providers.errors import ProviderTimeoutError, ProviderUnavailableError
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
PAST_THE_WINDOW = WINDOW + timedelta(hours=1)
SETTLE_AFTER = timedelta(minutes=5)
REASON = "stripe dashboard shows no PaymentIntent for the key (ticket OPS-42)"

During = Callable[[], Awaitable[None]]


class WorkerDied(Exception):
    """The worker stopped between its provider call and recording the answer."""


class LaggingAcquirer(ChargeOnlyProvider):
    """The first charge (or refund) lands and times out; ``charge_status`` and
    ``refund_status`` show what landed only once ``shows`` is set. ``during_status``, if
    set, runs once while the next status query is in flight (another worker's move)."""

    def __init__(self, *, charge_times_out: bool = True, worker_dies: bool = False) -> None:
        super().__init__()
        self._worker_dies = worker_dies
        self.shows = False
        self.status_error: Exception | None = None
        self.during_status: During | None = None
        self.charges: list[str] = []
        self.refunds: list[str] = []
        self.status_queries: list[str] = []
        self._charge_times_out = charge_times_out
        self._refunded: dict[str, RefundOutcome] = {}

    @property
    def name(self) -> str:
        return "lagging"

    @property
    def idempotency_window(self) -> timedelta | None:
        return WINDOW

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        outcome = ChargeOutcome(ChargeStatus.SUCCEEDED, f"ch_{len(self.charges) + 1}")
        self.charges.append(request.attempt_key)
        self.outcomes[request.attempt_key] = outcome
        if self._worker_dies:
            raise WorkerDied  # the call landed; its worker never recorded a thing
        if self._charge_times_out:
            raise ProviderTimeoutError(self.name, "landed, but no answer in time")
        return outcome

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        await self._status_query(attempt_key)
        return self.outcomes.get(attempt_key) if self.shows else None

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        outcome = RefundOutcome(ProviderRefundStatus.SUCCEEDED, f"re_{len(self.refunds) + 1}")
        self.refunds.append(request.refund_key)
        self._refunded[request.refund_key] = outcome
        if request.refund_key.endswith("-reversal"):
            return outcome  # the sweep's reversal of a stray charge: answered
        raise ProviderTimeoutError(self.name, "landed, but no answer in time")

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
        await self._status_query(refund_key)
        return self._refunded.get(refund_key) if self.shows else None

    async def _status_query(self, key: str) -> None:
        self.status_queries.append(key)
        during, self.during_status = self.during_status, None
        if during is not None:
            await during()
        if self.status_error is not None:
            raise self.status_error


class Rig:
    def __init__(self, store: PaymentStore, clock: Clock, acquirer: LaggingAcquirer) -> None:
        self.store = store
        self.clock = clock
        self.acquirer = acquirer
        self.metrics = Metrics()
        providers = Providers.of(acquirer)
        events = PaymentEvents(MESSAGES, "payments.results")
        self.handler = PaymentCommandHandler(
            store=store,
            providers=providers,
            router=Router.catch_all(acquirer.name),
            events=events,
            account_key=ACCOUNT_KEY,
            metrics=self.metrics,
            clock=clock,
        )
        self.reconciler = PaymentReconciler(
            store=store,
            handler=self.handler,
            metrics=self.metrics,
            min_age=timedelta(seconds=30),
            clock=clock,
        )
        strays = StrayStore(store.engine, store.writes, clock)
        self.settlement = PaymentSettlement(
            store=store, providers=providers, events=events, strays=strays, clock=clock
        )
        self.sweep = StraySweep(
            store=strays,
            providers=providers,
            metrics=self.metrics,
            settle_after=SETTLE_AFTER,
            clock=clock,
        )

    async def withheld_payment(self) -> str:
        """A payment whose charge landed unseen, withheld by a reconciler pass."""
        command = create_payment()
        assert await self.handler.handle(command) is Outcome.PENDING
        self.clock.now += PAST_THE_WINDOW
        report = await self.reconciler.run_once()
        assert (report.checked, report.still_pending) == (1, 1)
        return command.payment_request_id


@pytest.fixture
def rig(store: PaymentStore, clock: Clock) -> Rig:
    return Rig(store, clock, LaggingAcquirer())


async def payment_of(store: PaymentStore, payment_id: str) -> PaymentView:
    payment = await store.get_payment(payment_id)
    assert payment is not None
    return payment


async def attempt_row(engine, payment_id: str):
    async with engine.connect() as conn:
        return (
            await conn.execute(
                select(provider_attempts).where(provider_attempts.c.payment_id == payment_id)
            )
        ).one()


async def events_of(engine, payment_id: str):
    async with engine.connect() as conn:
        payloads = (await conn.execute(select(outbox.c.payload).order_by(outbox.c.id))).scalars()
        events = [MESSAGES.decode_any_result(p) for p in payloads]
    return [e for e in events if getattr(e, "payment_request_id", None) == payment_id]


async def test_the_operator_fails_a_withheld_payment_and_the_sweep_reverses_a_late_charge(
    rig: Rig, engine, caplog
):
    pid = await rig.withheld_payment()
    before = len(await events_of(engine, pid))

    settled = await rig.settlement.settle(pid, fail_reason=REASON)

    assert (settled.action, settled.outcome) == ("failed_by_operator", "failed")
    assert rig.acquirer.charges == [f"{pid}-a1"]  # never sent again
    payment = await payment_of(rig.store, pid)
    assert payment.status is PaymentStatus.FAILED
    assert payment.error is not None
    assert payment.error.code is ErrorCode.SETTLED_BY_OPERATOR
    assert REASON in payment.error.message
    events = await events_of(engine, pid)
    assert len(events) == before + 1  # the result event, through the outbox
    assert events[-1].status is PaymentStatus.FAILED
    assert events[-1].error.code is ErrorCode.SETTLED_BY_OPERATOR
    attempt = await attempt_row(engine, pid)
    assert (attempt.status, attempt.verified_at) == ("failed", None)  # closed, unverified
    audit = [r for r in caplog.records if r.name == "paygate.operator"]
    assert [r.operator_reason for r in audit] == [REASON]
    assert audit[0].payment_request_id == pid

    # Minutes later the search still lags: the sweep does not ask yet, so the key is not
    # marked verified on a "nothing" the search would still answer.
    rig.clock.now += SETTLE_AFTER + timedelta(seconds=1)
    early = await rig.sweep.run_once()
    assert early.checked == 0
    assert (await attempt_row(engine, pid)).verified_at is None

    # The provider's search catches up: the charge was there all along. A day on, the
    # sweep asks about the key, finds the charge and reverses it.
    rig.acquirer.shows = True
    rig.clock.now += SWEEP_HOLD
    swept = await rig.sweep.run_once()

    assert (swept.checked, swept.found, swept.reversed) == (1, 1, 1)
    assert rig.acquirer.refunds == [f"{pid}-a1-reversal"]
    assert (await payment_of(rig.store, pid)).status is PaymentStatus.FAILED
    assert (await rig.sweep.run_once()).checked == 0  # settled for good


async def test_the_charge_the_provider_now_shows_is_recorded_instead_of_the_failure(
    rig: Rig, engine
):
    pid = await rig.withheld_payment()
    rig.acquirer.shows = True

    settled = await rig.settlement.settle(pid, fail_reason=REASON)

    assert (settled.action, settled.outcome) == ("recorded_provider_answer", "succeeded")
    payment = await payment_of(rig.store, pid)
    assert (payment.status, payment.provider_reference, payment.error) == (
        PaymentStatus.SUCCEEDED,
        "ch_1",
        None,
    )
    assert (await events_of(engine, pid))[-1].status is PaymentStatus.SUCCEEDED
    assert rig.acquirer.charges == [f"{pid}-a1"]


async def test_a_payment_whose_worker_died_before_any_answer_is_settled_too(
    store: PaymentStore, clock: Clock
):
    rig = Rig(store, clock, LaggingAcquirer(worker_dies=True))
    command = create_payment()
    pid = command.payment_request_id
    with pytest.raises(WorkerDied):
        await rig.handler.handle(command)
    assert (await payment_of(store, pid)).status is PaymentStatus.PROCESSING  # as begun
    clock.now += PAST_THE_WINDOW
    assert (await rig.reconciler.run_once()).still_pending == 1  # withheld, still processing

    settled = await rig.settlement.settle(pid, fail_reason=REASON)

    assert (settled.action, settled.outcome) == ("failed_by_operator", "failed")
    assert (await payment_of(store, pid)).status is PaymentStatus.FAILED


async def test_without_failed_a_silent_provider_leaves_it_withheld_and_claimable(rig: Rig):
    pid = await rig.withheld_payment()

    settled = await rig.settlement.settle(pid)

    assert (settled.action, settled.outcome) == ("left_withheld", None)
    assert (await payment_of(rig.store, pid)).status is PaymentStatus.PENDING
    # The claim was given back: the next pass takes it at once.
    assert (await rig.reconciler.run_once()).still_pending == 1


@pytest.mark.parametrize(
    ("age", "settles"),
    [
        (timedelta(hours=1), False),  # the reconciler still re-sends it
        (WINDOW - timedelta(hours=2), False),
        (WINDOW - timedelta(minutes=59), True),  # in the margin: withheld already
        (WINDOW, True),
    ],
    ids=["an-hour-old", "before-the-margin", "in-the-margin", "at-the-windows-end"],
)
async def test_only_a_payment_past_the_window_less_the_margin_is_settled(
    store, clock, age, settles
):
    acquirer = LaggingAcquirer()
    rig = Rig(store, clock, acquirer)
    command = create_payment()
    assert await rig.handler.handle(command) is Outcome.PENDING
    clock.now += age
    pid = command.payment_request_id
    if settles and age < WINDOW:
        # Withheld, so asked and left as it is; but not failed while a late re-send of its
        # key may still reach the provider (it may until the window's end).
        assert (await rig.settlement.settle(pid)).action == "left_withheld"
        with pytest.raises(PaygateError) as refused:
            await rig.settlement.settle(pid, fail_reason=REASON)
        assert refused.value.code is ErrorCode.NOT_WITHHELD
        assert "run the command again" in refused.value.message
        assert (await payment_of(store, pid)).status is PaymentStatus.PENDING
        assert await store.claim(pid) is not None  # the claim was given back
        return
    if settles:
        assert (await rig.settlement.settle(pid, fail_reason=REASON)).action == (
            "failed_by_operator"
        )
        return
    with pytest.raises(PaygateError) as refused:
        await rig.settlement.settle(pid, fail_reason=REASON)
    assert refused.value.code is ErrorCode.NOT_WITHHELD
    assert "still honours its key" in refused.value.message
    assert acquirer.status_queries == []  # not even asked
    assert (await payment_of(store, pid)).status is PaymentStatus.PENDING
    assert await store.claim(pid) is not None  # the claim was given back


async def test_refusals_change_nothing(rig: Rig, engine):
    pid = await rig.withheld_payment()
    before = await rig.store.get_payment(pid)
    events = len(await events_of(engine, pid))

    for reason, code in [
        ("card 4242 4242 4242 4242 was not charged", ErrorCode.INVALID_REQUEST),
        ("  ", ErrorCode.INVALID_REQUEST),
        ("a\x00b", ErrorCode.INVALID_TEXT),
    ]:
        with pytest.raises(PaygateError) as refused:
            await rig.settlement.settle(pid, fail_reason=reason)
        assert refused.value.code is code
        assert "4242" not in refused.value.message

    with pytest.raises(PaygateError) as refused:
        await rig.settlement.settle("no-such-payment", fail_reason=REASON)
    assert refused.value.code is ErrorCode.NOT_FOUND

    rig.acquirer.status_error = ProviderUnavailableError("lagging", "down")
    with pytest.raises(PaygateError) as refused:
        await rig.settlement.settle(pid, fail_reason=REASON)
    assert refused.value.code is ErrorCode.PROVIDER_UNAVAILABLE
    rig.acquirer.status_error = None

    assert await rig.store.get_payment(pid) == before
    assert len(await events_of(engine, pid)) == events
    assert await rig.store.claim(pid) is not None  # nothing left held


async def test_a_final_payment_is_not_withheld(rig: Rig):
    pid = await rig.withheld_payment()
    await rig.settlement.settle(pid, fail_reason=REASON)

    with pytest.raises(PaygateError) as refused:
        await rig.settlement.settle(pid, fail_reason=REASON)

    assert refused.value.code is ErrorCode.NOT_WITHHELD
    assert "failed" in refused.value.message


async def test_settlement_holding_the_claim_keeps_a_reconciler_pass_out(rig: Rig):
    pid = await rig.withheld_payment()
    passes = []

    async def a_reconciler_pass_meanwhile() -> None:
        # Runs while the settlement's status query is in flight, under its claim.
        passes.append(await rig.reconciler.run_once())

    rig.acquirer.during_status = a_reconciler_pass_meanwhile
    queries = len(rig.acquirer.status_queries)

    settled = await rig.settlement.settle(pid, fail_reason=REASON)

    assert settled.action == "failed_by_operator"
    # The pass did not find it (claimed) or could not take it: it asked the provider nothing.
    assert passes[0].checked == passes[0].resolved == passes[0].still_pending == 0
    assert len(rig.acquirer.status_queries) == queries + 1
    assert (await payment_of(rig.store, pid)).status is PaymentStatus.FAILED


async def test_a_worker_holding_the_claim_keeps_the_settlement_out(rig: Rig):
    pid = await rig.withheld_payment()
    refusals: list[PaygateError] = []

    async def the_operator_meanwhile() -> None:
        # Runs while a reconciler pass's status query is in flight, under its claim.
        with pytest.raises(PaygateError) as refused:
            await rig.settlement.settle(pid, fail_reason=REASON)
        refusals.append(refused.value)

    rig.acquirer.during_status = the_operator_meanwhile
    rig.clock.now += timedelta(minutes=1)
    report = await rig.reconciler.run_once()

    assert report.still_pending == 1  # the pass withheld it again, as it would have
    assert [r.code for r in refusals] == [ErrorCode.NOT_WITHHELD]
    assert "another worker" in refusals[0].message
    assert (await payment_of(rig.store, pid)).status is PaymentStatus.PENDING
    # Once the pass gave the claim back, the operator's command goes through.
    assert (await rig.settlement.settle(pid, fail_reason=REASON)).action == "failed_by_operator"


async def test_a_settlement_whose_claim_ran_out_meanwhile_records_nothing(rig: Rig, engine):
    pid = await rig.withheld_payment()
    events = len(await events_of(engine, pid))
    passes = []

    async def the_lease_runs_out_and_a_pass_takes_over() -> None:
        rig.clock.now += timedelta(hours=1)  # far past any claim lease
        passes.append(await rig.reconciler.run_once())

    rig.acquirer.during_status = the_lease_runs_out_and_a_pass_takes_over

    with pytest.raises(PaygateError) as refused:
        await rig.settlement.settle(pid, fail_reason=REASON)

    assert refused.value.code is ErrorCode.NOT_WITHHELD
    assert "took it over" in refused.value.message
    assert passes[0].still_pending == 1  # the pass took the expired claim, and withheld it
    assert (await payment_of(rig.store, pid)).status is PaymentStatus.PENDING
    assert len(await events_of(engine, pid)) == events


# --- refunds ---------------------------------------------------------------------------------


async def withheld_refund(store: PaymentStore, clock: Clock, acquirer: LaggingAcquirer):
    engine = store.engine
    metrics = Metrics()
    payments = Rig(store, clock, acquirer).handler
    refund_store = RefundStore(engine, store.writes, clock)
    events = RefundEvents(MESSAGES, "payments.results")
    refunds = RefundCommandHandler(
        store=refund_store,
        providers=Providers.of(acquirer),
        events=events,
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
    clock.now += PAST_THE_WINDOW
    assert await reconciler.run_once() == 1
    settlement = RefundSettlement(
        store=refund_store,
        payments=store,
        providers=Providers.of(acquirer),
        events=events,
        clock=clock,
    )
    return refund, refund_store, settlement


async def test_the_operator_fails_a_withheld_refund_and_its_reservation_is_released(store, clock):
    acquirer = LaggingAcquirer(charge_times_out=False)
    refund, refund_store, settlement = await withheld_refund(store, clock, acquirer)
    assert (await payment_of(store, refund.payment_request_id)).refund_reserved_minor == 3_000

    settled = await settlement.settle(refund.refund_id, fail_reason=REASON)

    assert (settled.subject, settled.action, settled.outcome) == (
        "refund",
        "failed_by_operator",
        "failed",
    )
    stored = await refund_store.get(refund.refund_id)
    assert stored.status is RefundStatus.FAILED
    assert stored.error.code is ErrorCode.SETTLED_BY_OPERATOR
    assert REASON in stored.error.message
    payment = await payment_of(store, refund.payment_request_id)
    assert (payment.refund_reserved_minor, payment.refunded_minor) == (0, 0)
    assert acquirer.refunds == [refund.refund_id]  # never sent again

    with pytest.raises(PaygateError) as refused:
        await settlement.settle(refund.refund_id, fail_reason=REASON)
    assert refused.value.code is ErrorCode.NOT_WITHHELD


async def test_the_refund_the_provider_now_shows_is_recorded(store, clock):
    acquirer = LaggingAcquirer(charge_times_out=False)
    refund, refund_store, settlement = await withheld_refund(store, clock, acquirer)
    acquirer.shows = True

    settled = await settlement.settle(refund.refund_id, fail_reason=REASON)

    assert (settled.action, settled.outcome) == ("recorded_provider_answer", "succeeded")
    assert (await refund_store.get(refund.refund_id)).status is RefundStatus.SUCCEEDED
    payment = await payment_of(store, refund.payment_request_id)
    assert (payment.refund_reserved_minor, payment.refunded_minor) == (0, 3_000)


async def test_a_refund_that_is_not_withheld_is_refused_and_left_as_it_is(store, clock):
    acquirer = LaggingAcquirer(charge_times_out=False)
    refund, refund_store, settlement = await withheld_refund(store, clock, acquirer)
    queries = len(acquirer.status_queries)

    # Held by a worker right now (a reconciler pass, a redelivery): refused, nothing asked.
    claimed = await refund_store.claim(refund.refund_id)
    assert claimed is not None
    with pytest.raises(PaygateError) as refused:
        await settlement.settle(refund.refund_id, fail_reason=REASON)
    assert refused.value.code is ErrorCode.NOT_WITHHELD
    assert "another worker" in refused.value.message
    await refund_store.release(refund.refund_id, claimed.claim.token)

    # Inside its provider's window, as if the clock were back a day: the reconciler's.
    clock.now -= timedelta(days=1)
    with pytest.raises(PaygateError) as refused:
        await settlement.settle(refund.refund_id, fail_reason=REASON)
    assert refused.value.code is ErrorCode.NOT_WITHHELD
    assert "still honours its key" in refused.value.message

    assert len(acquirer.status_queries) == queries
    stored = await refund_store.get(refund.refund_id)
    assert stored is not None
    assert stored.status is RefundStatus.PENDING
    assert await refund_store.claim(refund.refund_id) is not None  # given back each time


async def test_a_providers_notice_of_the_charge_has_the_held_key_asked_at_once(
    rig: Rig, store: PaymentStore, clock: Clock
):
    pid = await rig.withheld_payment()
    await rig.settlement.settle(pid, fail_reason=REASON)
    strays = StrayStore(store.engine, store.writes, clock)

    # The payer's charge under the key is notified (signed): the hold must not delay it.
    rig.acquirer.shows = True
    assert await strays.reopen(f"{pid}-a1", rig.acquirer.name)
    clock.now += SETTLE_AFTER + timedelta(seconds=1)
    swept = await rig.sweep.run_once()

    assert (swept.found, swept.reversed) == (1, 1)
    assert rig.acquirer.refunds == [f"{pid}-a1-reversal"]
    # And a hold written after a reopen changes nothing.
    assert not await strays.hold_first_question(f"{pid}-a1", clock.now + SWEEP_HOLD)


class BrokenHold:
    async def hold_first_question(self, attempt_key: str, until: datetime) -> bool:
        raise ConnectionError("the database went away after the failure was committed")


async def test_a_hold_not_written_still_reports_the_failure_that_was_made(
    rig: Rig, store: PaymentStore, clock: Clock, caplog
):
    pid = await rig.withheld_payment()
    settlement = PaymentSettlement(
        store=store,
        providers=Providers.of(rig.acquirer),
        events=PaymentEvents(MESSAGES, "payments.results"),
        strays=BrokenHold(),
        clock=clock,
    )

    settled = await settlement.settle(pid, fail_reason=REASON)

    assert settled.action == "failed_by_operator"
    assert (await payment_of(store, pid)).status is PaymentStatus.FAILED
    lines = [r.getMessage() for r in caplog.records if r.name == "paygate.operator"]
    assert lines[0].startswith("withheld payment failed by an operator")  # audit line first
    assert "not held back" in lines[1]
