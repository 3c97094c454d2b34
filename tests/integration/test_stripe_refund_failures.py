"""Refunds Stripe fails after paygate recorded them, learnt from Stripe's ``refund.failed``
event through the facade's real application, verified by the official SDK, recorded on real
databases (SQLite and PostgreSQL); and stray charges' reversals Stripe leaves pending and
then fails, found by the stray-charge sweep.

The Stripe side is tests.support.stripe_lagging_search, served to the real Stripe adapter as
its HTTP client: it keeps the Refunds it is sent, answers them ``succeeded`` or ``pending``
as the test says, fails one later as the card network does (``failed`` with a
``failure_reason``, no longer counted in the Charge's ``amount_refunded``), and lists them
by PaymentIntent. Events are signed by hand as Stripe documents (tests.support.stripe_events).

Before, ``refund.failed`` was not read (acknowledged, nothing recorded): the payment stayed
recorded refunded, the client was told "refunded", and the payer never got the money back;
and a stray charge's reversal answered ``pending`` was recorded ``reversed`` on the next
try from the charge's ``amount_refunded`` (which counts a pending refund), so once it
failed the money stayed taken with nothing asking again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.provider_notices import NoticeRecorder
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from consumer.refund_notices import RefundFailures
from consumer.refund_reconciler import RefundReconciler
from consumer.stray_charges import StraySweep
from domain.accounts import Account, AccountType
from domain.errors import MAX_DECLINE_CODE_LENGTH, ErrorCode
from domain.events import RefundResult, refund_event_id
from domain.money import Money
from domain.payment_view import PaymentView
from domain.payments import CreatePayment
from domain.refunds import RefundPayment, RefundStatus
from domain.status import PaymentStatus
from persistence.payment_store import PaymentStore
from persistence.provider_refund_store import ProviderRefundStore
from persistence.refund_store import RefundStore
from persistence.stray_store import STRAY_FAILED, StrayStore
from persistence.tables import outbox, payments, refunds
from providers.registry import Providers
from providers.stripe import StripeProvider
from providers.stripe.webhooks import StripeWebhooks
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import create_payment
from tests.support.clock import Clock
from tests.support.facade_world import World, world_app
from tests.support.stray_setup import charge_under, handler_giving_up_after_two_calls
from tests.support.stripe_events import SECRET, event, headers
from tests.support.stripe_lagging_search import LaggingStripe

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
ACKNOWLEDGED = {"received": True}
AMOUNT = 1050  # EUR cents, tests.support.builders' payment


@dataclass
class Rig:
    stripe_api: LaggingStripe
    stripe: StripeProvider
    handler: PaymentCommandHandler
    refunds: RefundCommandHandler
    refund_store: RefundStore
    url: str
    notice_metrics: Metrics


@pytest.fixture
async def rig(store: PaymentStore, metrics: Metrics, clock: Clock) -> AsyncIterator[Rig]:
    stripe_api = LaggingStripe(clock, hidden_for=timedelta(0))
    stripe = StripeProvider("sk_test_lagging", http_client=stripe_api)
    await stripe.start()
    refund_store = RefundStore(store.engine, store.writes, clock)
    refund_events = RefundEvents(MESSAGES, "payments.results")
    notice_metrics = Metrics()
    strays = StrayStore(store.engine, store.writes, clock)
    facade = TestServer(
        world_app(
            World(),
            notice_readers={"stripe": StripeWebhooks(secret=SecretStr(SECRET), livemode=False)},
            notice_sink=NoticeRecorder(
                store=store,
                events=PaymentEvents(MESSAGES, "payments.results"),
                strays=strays,
                refunds=ProviderRefundStore(store.writes, clock),
                refund_failures=RefundFailures(
                    store=refund_store,
                    events=refund_events,
                    strays=strays,
                    metrics=notice_metrics,
                    clock=clock,
                ),
                clock=clock,
            ),
        )
    )
    await facade.start_server()
    refund_handler = RefundCommandHandler(
        store=refund_store,
        providers=Providers.of(stripe),
        events=refund_events,
        metrics=metrics,
        clock=clock,
    )
    try:
        yield Rig(
            stripe_api,
            stripe,
            handler_giving_up_after_two_calls(store, stripe, clock),
            refund_handler,
            refund_store,
            str(facade.make_url("/v1/notifications/stripe")),
            notice_metrics,
        )
    finally:
        await stripe.stop()
        await facade.close()


async def post(
    rig: Rig, event_type: str, data_object: dict[str, object], *, made_at: int | None = None
) -> int:
    """Stripe posts the event it made at ``made_at`` (its ``created``; by default the test
    clock's time, which a test that does not move it keeps the same for every event); the
    facade's status (200 acknowledged, else resent)."""
    created = rig.stripe_api.now_unix() if made_at is None else made_at
    body = event(event_type, data_object, created=created)
    async with (
        ClientSession() as session,
        session.post(rig.url, data=body, headers=headers(body)) as resp,
    ):
        if resp.status == 200:
            assert await resp.json() == ACKNOWLEDGED
        return resp.status


def card_payment() -> CreatePayment:
    return dataclasses.replace(create_payment(), payer=Account(AccountType.TOKEN, "pm_card_visa"))


async def paid(rig: Rig, store: PaymentStore) -> tuple[PaymentView, str]:
    """A card payment paygate records succeeded; it and its PaymentIntent's id."""
    command = card_payment()
    assert await rig.handler.handle(command) is Outcome.SUCCEEDED
    view = await store.get_payment(command.payment_request_id)
    assert view is not None
    assert view.status is PaymentStatus.SUCCEEDED
    assert view.provider_reference is not None
    return view, view.provider_reference


def refund_of(view: PaymentView, amount: int, key: str) -> RefundPayment:
    return RefundPayment.create(
        idempotency_key=key,
        payment_request_id=view.payment_request_id,
        order_id=view.order_id,
        amount=Money(amount, "EUR"),
        reason=None,
        requested_at=view.created_at,
    )


async def totals(store: PaymentStore, payment_id: str) -> tuple[PaymentStatus, int, int]:
    view = await store.get_payment(payment_id)
    assert view is not None
    return view.status, view.refunded_minor, view.refundable_minor


async def rows_account_for_the_total(engine: AsyncEngine, payment_id: str) -> bool:
    """refunded_minor = succeeded refund rows + refunded_outside_minor, and nothing is
    reserved beyond what was captured."""
    async with engine.connect() as conn:
        by_rows = (
            await conn.execute(
                select(func.coalesce(func.sum(refunds.c.amount_minor), 0))
                .where(refunds.c.payment_id == payment_id)
                .where(refunds.c.status == RefundStatus.SUCCEEDED.value)
            )
        ).scalar_one()
        row = (await conn.execute(select(payments).where(payments.c.id == payment_id))).one()
    return (
        row.refunded_minor == by_rows + row.refunded_outside_minor
        and row.refunded_minor + row.refund_reserved_minor <= row.amount_minor
    )


async def refund_events(engine: AsyncEngine, refund_id: str) -> list[RefundResult]:
    async with engine.connect() as conn:
        payloads = (await conn.execute(select(outbox.c.payload).order_by(outbox.c.id))).scalars()
        decoded = [MESSAGES.decode_any_result(p) for p in payloads]
    return [e for e in decoded if isinstance(e, RefundResult) and e.refund_id == refund_id]


def stripe_refund_of(rig: Rig, refund_id: str) -> str:
    (found,) = [
        r["id"]
        for r in rig.stripe_api.refunds.values()
        if r["metadata"].get("paygateRefundId") == refund_id
    ]
    return str(found)


def failed_later(rig: Rig) -> float | None:
    return rig.notice_metrics.registry.get_sample_value(
        "paygate_refunds_failed_after_success_total", {"provider": "stripe"}
    )


async def test_a_refund_stripe_fails_after_it_succeeded_is_failed_and_refundable_again(
    rig: Rig, store: PaymentStore, engine: AsyncEngine
):
    view, _ = await paid(rig, store)
    pid = view.payment_request_id
    command = refund_of(view, 300, "own-1")
    assert await rig.refunds.handle(command) is Outcome.SUCCEEDED
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 300, 750)

    failed = rig.stripe_api.fail_refund(stripe_refund_of(rig, command.refund_id))
    assert await post(rig, "refund.failed", failed) == 200

    # The total falls by exactly the refund's amount; the row says why, as GET shows it.
    assert await totals(store, pid) == (PaymentStatus.SUCCEEDED, 0, AMOUNT)
    assert await rows_account_for_the_total(engine, pid)
    refund = await rig.refund_store.get(command.refund_id)
    assert refund is not None
    assert refund.status is RefundStatus.FAILED
    assert refund.error is not None
    assert refund.error.code is ErrorCode.REFUND_FAILED_AFTER_SUCCESS
    assert refund.error.decline_code == "expired_or_canceled_card"
    assert refund.provider_reference == failed["id"]
    # The client learns it: the refund's failed event, with the payment's totals after it.
    events = await refund_events(engine, command.refund_id)
    assert [e.status for e in events] == [
        RefundStatus.SUCCEEDED,
        RefundStatus.FAILED,
    ]
    last = events[-1]
    assert last.event_id == refund_event_id(command.refund_id, RefundStatus.FAILED)
    assert last.error is not None
    assert last.error.code is ErrorCode.REFUND_FAILED_AFTER_SUCCESS
    assert (last.payment_status, last.payment_refunded_minor) == (PaymentStatus.SUCCEEDED, 0)
    assert failed_later(rig) == 1

    # Stripe delivers it again: nothing more changes, no second event, no second count.
    assert await post(rig, "refund.failed", failed) == 200
    assert await totals(store, pid) == (PaymentStatus.SUCCEEDED, 0, AMOUNT)
    assert len(await refund_events(engine, command.refund_id)) == 2
    assert failed_later(rig) == 1

    # What the payer is owed can be refunded again, with a new key.
    assert await rig.refunds.handle(refund_of(view, AMOUNT, "own-2")) is Outcome.SUCCEEDED
    assert await totals(store, pid) == (PaymentStatus.REFUNDED, AMOUNT, 0)
    assert await rows_account_for_the_total(engine, pid)


async def test_a_failure_reason_longer_than_its_column_is_recorded_cut(
    rig: Rig, store: PaymentStore, engine: AsyncEngine
):
    """Stripe's ``failure_reason`` is stored as the refund's ``decline_code`` (64
    characters). Before, a longer one (a reason Stripe adds) was refused by PostgreSQL's
    write: the facade answered Stripe 500 at every delivery, the refund stayed
    ``succeeded`` and the payer's money was never offered again. It is cut instead, the
    same in the row and in the event."""
    view, _ = await paid(rig, store)
    pid = view.payment_request_id
    command = refund_of(view, 300, "own-1")
    assert await rig.refunds.handle(command) is Outcome.SUCCEEDED
    reason = "charge_for_pending_refund_disputed_" * 3  # longer than any Stripe documents
    assert len(reason) > MAX_DECLINE_CODE_LENGTH

    failed = rig.stripe_api.fail_refund(stripe_refund_of(rig, command.refund_id), reason)
    assert await post(rig, "refund.failed", failed) == 200

    assert await totals(store, pid) == (PaymentStatus.SUCCEEDED, 0, AMOUNT)
    refund = await rig.refund_store.get(command.refund_id)
    assert refund is not None
    assert refund.status is RefundStatus.FAILED
    assert refund.error is not None
    assert refund.error.decline_code == reason[:MAX_DECLINE_CODE_LENGTH]
    last = (await refund_events(engine, command.refund_id))[-1]
    assert last.error is not None
    assert last.error.decline_code == reason[:MAX_DECLINE_CODE_LENGTH]


async def test_two_deliveries_of_one_failure_at_once_take_the_refund_back_once(
    rig: Rig, store: PaymentStore, engine: AsyncEngine
):
    """Stripe may deliver an event twice at once (a retry crossing a slow answer): the write
    is conditional on the refund still being succeeded, under its rows' locks, so only one
    delivery moves the total, whichever order the writer queue takes them in."""
    view, _ = await paid(rig, store)
    pid = view.payment_request_id
    first = refund_of(view, 300, "own-1")
    second = refund_of(view, 200, "own-2")
    assert await rig.refunds.handle(first) is Outcome.SUCCEEDED
    assert await rig.refunds.handle(second) is Outcome.SUCCEEDED
    failed = rig.stripe_api.fail_refund(stripe_refund_of(rig, first.refund_id))

    answers = await asyncio.gather(*(post(rig, "refund.failed", failed) for _ in range(4)))

    assert answers == [200] * 4
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 200, AMOUNT - 200)
    assert await rows_account_for_the_total(engine, pid)
    assert len(await refund_events(engine, first.refund_id)) == 2
    assert failed_later(rig) == 1


async def test_a_failure_arriving_while_paygates_refund_is_in_flight_is_recorded_once_final(
    rig: Rig, store: PaymentStore, engine: AsyncEngine
):
    """Fixed interleaving: Stripe answers paygate's refund ``succeeded`` and fails it at
    once; the event arrives before paygate recorded the answer (the handler holds the
    refund). It is answered 503, so Stripe sends it again; the handler then records the
    answer it got (succeeded), and the event sent again takes it back."""
    view, _ = await paid(rig, store)
    pid = view.payment_request_id
    command = refund_of(view, 400, "own-1")
    rig.stripe_api.hold_refunds = True
    in_flight = asyncio.create_task(rig.refunds.handle(command))
    await asyncio.wait_for(rig.stripe_api.refund_held.wait(), 30)
    failed = rig.stripe_api.fail_refund(stripe_refund_of(rig, command.refund_id))

    assert await post(rig, "refund.failed", failed) == 503  # not acknowledged: resent
    refund = await rig.refund_store.get(command.refund_id)
    assert refund is not None
    assert refund.status is RefundStatus.PROCESSING

    rig.stripe_api.release_refunds.set()
    assert await in_flight is Outcome.SUCCEEDED  # Stripe's answer, made before it failed
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 400, 650)

    assert await post(rig, "refund.failed", failed) == 200  # Stripe's retry
    assert await totals(store, pid) == (PaymentStatus.SUCCEEDED, 0, AMOUNT)
    assert await rows_account_for_the_total(engine, pid)
    assert [e.status for e in await refund_events(engine, command.refund_id)] == [
        RefundStatus.SUCCEEDED,
        RefundStatus.FAILED,
    ]


async def test_a_pending_refund_stripe_fails_is_failed_by_its_event_or_by_the_reconciler(
    rig: Rig, store: PaymentStore, engine: AsyncEngine, metrics: Metrics, clock: Clock
):
    """A refund answered ``pending`` keeps its reservation; Stripe's failure of it releases
    the reservation (``refund_failed``: the client was never told it succeeded), whichever
    comes first: the event, or the reconciler asking Stripe. The other then finds it
    final and changes nothing."""
    view, _ = await paid(rig, store)
    pid = view.payment_request_id
    rig.stripe_api.refunds_answered = "pending"
    by_event = refund_of(view, 300, "own-1")
    by_reconciler = refund_of(view, 200, "own-2")
    assert await rig.refunds.handle(by_event) is Outcome.PENDING
    assert await rig.refunds.handle(by_reconciler) is Outcome.PENDING
    assert await totals(store, pid) == (PaymentStatus.SUCCEEDED, 0, AMOUNT - 500)

    first = rig.stripe_api.fail_refund(stripe_refund_of(rig, by_event.refund_id))
    second = rig.stripe_api.fail_refund(stripe_refund_of(rig, by_reconciler.refund_id))
    assert await post(rig, "refund.failed", first) == 200
    clock.now += timedelta(minutes=5)
    reconciler = RefundReconciler(
        store=rig.refund_store,
        handler=rig.refunds,
        metrics=metrics,
        min_age=timedelta(minutes=1),
        clock=clock,
    )
    assert await reconciler.run_once() == 1  # only the second is still open
    assert await post(rig, "refund.failed", second) == 200  # late: already failed
    assert await post(rig, "refund.failed", first) == 200  # a replay

    assert await totals(store, pid) == (PaymentStatus.SUCCEEDED, 0, AMOUNT)
    assert await rows_account_for_the_total(engine, pid)
    for command in (by_event, by_reconciler):
        refund = await rig.refund_store.get(command.refund_id)
        assert refund is not None
        assert refund.status is RefundStatus.FAILED
        assert refund.error is not None
        assert refund.error.code is ErrorCode.REFUND_FAILED
        assert [e.status for e in await refund_events(engine, command.refund_id)] == [
            RefundStatus.PENDING,
            RefundStatus.FAILED,
        ]
    assert not failed_later(rig)  # none was ever recorded succeeded


async def test_charge_refunded_after_the_failure_records_none_of_it_as_refunded_outside(
    rig: Rig, store: PaymentStore, engine: AsyncEngine
):
    """paygate refunds 300; 200 are refunded in the Dashboard (recorded as refunded
    outside); Stripe fails paygate's 300. Stripe's ``charge.refunded`` events, the one made
    before the failure (amount_refunded 500, delivered late) and one after it (200), must
    not record the failed 300 as refunded outside: the payer is still owed it."""
    view, intent_id = await paid(rig, store)
    pid = view.payment_request_id
    command = refund_of(view, 300, "own-1")
    assert await rig.refunds.handle(command) is Outcome.SUCCEEDED
    rig.stripe_api.refund_outside(intent_id, 200)
    before_failure = rig.stripe_api.charge(intent_id)
    assert before_failure["amount_refunded"] == 500
    assert await post(rig, "charge.refunded", before_failure) == 200
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 500, 550)

    failed = rig.stripe_api.fail_refund(stripe_refund_of(rig, command.refund_id))
    assert await post(rig, "refund.failed", failed) == 200
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 200, 850)

    after_failure = rig.stripe_api.charge(intent_id)
    assert after_failure["amount_refunded"] == 200
    assert await post(rig, "charge.refunded", after_failure) == 200
    assert await post(rig, "charge.refunded", before_failure) == 200  # late
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 200, 850)
    assert await rows_account_for_the_total(engine, pid)
    async with engine.connect() as conn:
        outside = (
            await conn.execute(
                select(payments.c.refunded_outside_minor).where(payments.c.id == pid)
            )
        ).scalar_one()
    assert outside == 200  # the Dashboard's, and only it


async def test_refund_failed_events_not_paygates_or_not_matching_change_nothing(
    rig: Rig, store: PaymentStore
):
    view, _ = await paid(rig, store)
    pid = view.payment_request_id
    command = refund_of(view, 300, "own-1")
    assert await rig.refunds.handle(command) is Outcome.SUCCEEDED
    failed = rig.stripe_api.fail_refund(stripe_refund_of(rig, command.refund_id))
    not_paygates = {**failed, "metadata": {}}
    unknown = {**failed, "metadata": {**failed["metadata"], "paygateRefundId": "ref_" + "0" * 32}}
    assert await post(rig, "refund.failed", not_paygates) == 200  # acknowledged, ignored
    assert await post(rig, "refund.failed", unknown) == 200  # another system's
    assert await post(rig, "refund.failed", {**failed, "amount": 299}) == 400  # mismatch
    assert await post(rig, "refund.failed", {**failed, "id": "re_other"}) == 400
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 300, 750)
    refund = await rig.refund_store.get(command.refund_id)
    assert refund is not None
    assert refund.status is RefundStatus.SUCCEEDED


async def outside_refunded(rig: Rig, store: PaymentStore, engine: AsyncEngine, pid: str) -> int:
    total = (await totals(store, pid))[1]
    assert await rows_account_for_the_total(engine, pid)
    async with engine.connect() as conn:
        outside = (
            await conn.execute(
                select(payments.c.refunded_outside_minor).where(payments.c.id == pid)
            )
        ).scalar_one()
    assert outside <= total
    return int(outside)


async def test_a_dashboard_refund_stripe_fails_is_taken_back_once_and_refundable_again(
    rig: Rig, store: PaymentStore, engine: AsyncEngine
):
    """A refund of 300 made in Stripe's Dashboard, counted from ``charge.refunded``, that
    Stripe fails: its ``refund.failed`` (a Refund without paygate's metadata) takes the 300
    back from what was counted outside, once; the ``charge.refunded`` made before the
    failure, delivered late, does not count it again; the payer can be refunded it through
    paygate. Before, the event was acknowledged and ignored: 300 stayed counted, and
    paygate refused to refund it."""
    view, intent_id = await paid(rig, store)
    pid = view.payment_request_id
    dashboard = rig.stripe_api.refund_outside(intent_id, 300)
    before_failure = rig.stripe_api.charge(intent_id)
    assert await post(rig, "charge.refunded", before_failure) == 200
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 300, 750)
    assert await outside_refunded(rig, store, engine, pid) == 300

    failed = rig.stripe_api.fail_refund(dashboard)
    assert failed["metadata"] == {}
    assert await post(rig, "refund.failed", failed) == 200
    assert await totals(store, pid) == (PaymentStatus.SUCCEEDED, 0, AMOUNT)
    assert await outside_refunded(rig, store, engine, pid) == 0

    assert await post(rig, "refund.failed", failed) == 200  # Stripe delivers it again
    assert await post(rig, "charge.refunded", before_failure) == 200  # late
    assert await post(rig, "charge.refunded", rig.stripe_api.charge(intent_id)) == 200
    assert await totals(store, pid) == (PaymentStatus.SUCCEEDED, 0, AMOUNT)
    assert await outside_refunded(rig, store, engine, pid) == 0
    assert not failed_later(rig)  # not a refund of paygate's

    assert await rig.refunds.handle(refund_of(view, AMOUNT, "own-1")) is Outcome.SUCCEEDED
    assert await totals(store, pid) == (PaymentStatus.REFUNDED, AMOUNT, 0)
    assert await outside_refunded(rig, store, engine, pid) == 0


async def test_a_dashboard_refunds_failure_before_its_charge_refunded_is_never_counted(
    rig: Rig, store: PaymentStore, engine: AsyncEngine
):
    """Stripe delivers the failure first, the ``charge.refunded`` made when the refund was
    made (counting it) after: nothing is counted outside."""
    view, intent_id = await paid(rig, store)
    pid = view.payment_request_id
    dashboard = rig.stripe_api.refund_outside(intent_id, 300)
    before_failure = rig.stripe_api.charge(intent_id)
    failed = rig.stripe_api.fail_refund(dashboard)
    assert await post(rig, "refund.failed", failed) == 200
    assert await post(rig, "charge.refunded", before_failure) == 200
    assert await totals(store, pid) == (PaymentStatus.SUCCEEDED, 0, AMOUNT)
    assert await outside_refunded(rig, store, engine, pid) == 0


async def test_a_dashboard_refunds_failure_while_paygates_refund_is_in_flight(
    rig: Rig, store: PaymentStore, engine: AsyncEngine
):
    """paygate's refund of 400 is sent and held (Stripe has made it, paygate has not
    recorded the answer) while a counted Dashboard refund of 300 fails: only the 300
    falls; paygate's refund then lands as its own, and Stripe's readings made while both
    stood count neither again."""
    view, intent_id = await paid(rig, store)
    pid = view.payment_request_id
    dashboard = rig.stripe_api.refund_outside(intent_id, 300)
    assert await post(rig, "charge.refunded", rig.stripe_api.charge(intent_id)) == 200
    command = refund_of(view, 400, "own-1")
    rig.stripe_api.hold_refunds = True
    in_flight = asyncio.create_task(rig.refunds.handle(command))
    await asyncio.wait_for(rig.stripe_api.refund_held.wait(), 30)
    both = rig.stripe_api.charge(intent_id)
    assert both["amount_refunded"] == 700

    assert await post(rig, "refund.failed", rig.stripe_api.fail_refund(dashboard)) == 200
    assert await post(rig, "charge.refunded", both) == 200
    assert await totals(store, pid) == (PaymentStatus.SUCCEEDED, 0, AMOUNT - 400)
    assert await outside_refunded(rig, store, engine, pid) == 0

    rig.stripe_api.release_refunds.set()
    assert await in_flight is Outcome.SUCCEEDED
    assert await post(rig, "charge.refunded", both) == 200
    assert await post(rig, "charge.refunded", rig.stripe_api.charge(intent_id)) == 200
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 400, AMOUNT - 400)
    assert await outside_refunded(rig, store, engine, pid) == 0


async def test_bad_dashboard_refund_failures_are_refused_and_change_nothing(
    rig: Rig, store: PaymentStore, engine: AsyncEngine
):
    view, intent_id = await paid(rig, store)
    pid = view.payment_request_id
    dashboard = rig.stripe_api.refund_outside(intent_id, 300)
    assert await post(rig, "charge.refunded", rig.stripe_api.charge(intent_id)) == 200
    failed = rig.stripe_api.fail_refund(dashboard)

    assert await post(rig, "refund.failed", {**failed, "currency": "usd"}) == 400
    assert await post(rig, "refund.failed", {**failed, "amount": AMOUNT + 1}) == 400
    assert await post(rig, "refund.failed", {**failed, "amount": -300}) == 400
    assert await post(rig, "refund.failed", {**failed, "amount": 0}) == 400
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 300, 750)
    assert await outside_refunded(rig, store, engine, pid) == 300

    # The same refund id named on another payment's PaymentIntent once it is recorded.
    other, other_intent = await paid(rig, store)
    assert await post(rig, "refund.failed", failed) == 200
    assert await post(rig, "refund.failed", {**failed, "payment_intent": other_intent}) == 400
    assert await totals(store, pid) == (PaymentStatus.SUCCEEDED, 0, AMOUNT)
    assert await totals(store, other.payment_request_id) == (PaymentStatus.SUCCEEDED, 0, AMOUNT)


async def stray_charge(rig: Rig, store: PaymentStore, clock: Clock) -> tuple[str, StraySweep]:
    """A failed payment whose key Stripe charged late (a stray charge), and the sweep."""
    command = card_payment()
    rig.stripe_api.refuse_next = 2  # both calls refused before processing: failed
    assert await rig.handler.handle(command) is Outcome.FAILED
    charged = await charge_under(rig.stripe, command, f"{command.payment_request_id}-a1")
    assert charged.provider_reference is not None
    sweep = StraySweep(
        store=StrayStore(store.engine, store.writes, clock),
        providers=Providers.of(rig.stripe),
        metrics=rig.notice_metrics,
        settle_after=timedelta(minutes=5),
        clock=clock,
    )
    clock.now += timedelta(minutes=6)
    return charged.provider_reference, sweep


async def test_a_stray_reversal_stripe_leaves_pending_and_then_fails_is_never_taken_as_done(
    rig: Rig, store: PaymentStore, clock: Clock
):
    intent_id, sweep = await stray_charge(rig, store, clock)
    rig.stripe_api.refunds_answered = "pending"

    first = await sweep.run_once()
    assert (first.found, first.reversed, first.unanswered) == (1, 0, 1)
    # The charge's amount_refunded counts the pending refund: nothing seems kept.
    assert rig.stripe_api.charge(intent_id)["amount_refunded"] == AMOUNT

    clock.now += timedelta(hours=2)
    second = await sweep.run_once()
    assert (second.reversed, second.reversal_failed, second.unanswered) == (0, 0, 1)

    (reversal,) = [r for r in rig.stripe_api.refunds.values() if r["metadata"]]
    rig.stripe_api.fail_refund(reversal["id"])
    clock.now += timedelta(hours=2)
    third = await sweep.run_once()
    assert (third.reversed, third.reversal_failed) == (0, 1)
    strays = StrayStore(store.engine, store.writes, clock)
    (row,) = await strays.all()
    assert row["status"] == STRAY_FAILED
    assert "failed the reversal" in str(row["error_message"])
    assert rig.stripe_api.charge(intent_id)["amount_refunded"] == 0  # still taken: paged


async def test_a_stray_reversal_stripe_fails_after_it_succeeded_pages_again(
    rig: Rig, store: PaymentStore, clock: Clock
):
    _, sweep = await stray_charge(rig, store, clock)
    report = await sweep.run_once()
    assert (report.found, report.reversed) == (1, 1)
    (reversal,) = [r for r in rig.stripe_api.refunds.values() if r["metadata"]]

    failed = rig.stripe_api.fail_refund(reversal["id"])
    assert await post(rig, "refund.failed", failed) == 200
    assert await post(rig, "refund.failed", failed) == 200  # a replay: counted once

    strays = StrayStore(store.engine, store.writes, clock)
    (row,) = await strays.all()
    assert row["status"] == STRAY_FAILED
    assert (
        rig.notice_metrics.registry.get_sample_value(
            "paygate_stray_charges_total", {"provider": "stripe", "result": "reversal_failed"}
        )
        == 1
    )


async def test_a_stray_reversal_failed_while_the_sweep_awaits_its_answer_is_not_lost(
    rig: Rig, store: PaymentStore, clock: Clock
):
    """Fixed interleaving: the sweep sends a stray charge's reversal refund; Stripe answers
    it ``succeeded`` and the card network fails it before the answer reaches the sweep. The
    ``refund.failed`` event arrives while the stray charge is still ``reversing`` (its
    reversal in the sweep's hands): were it acknowledged then, Stripe would never send it
    again, the sweep would record the answer it got (``reversed``) and nothing would ask
    again, the money taken with no alert. Answered busy, Stripe sends it again once the
    sweep recorded its answer, and the stray charge is failed for an operator."""
    intent_id, sweep = await stray_charge(rig, store, clock)
    rig.stripe_api.hold_refunds = True
    sweeping = asyncio.create_task(sweep.run_once())
    await asyncio.wait_for(rig.stripe_api.refund_held.wait(), 30)
    (reversal,) = [r for r in rig.stripe_api.refunds.values() if r["metadata"]]
    failed = rig.stripe_api.fail_refund(reversal["id"])

    first = await post(rig, "refund.failed", failed)
    rig.stripe_api.release_refunds.set()
    report = await sweeping
    assert report.reversed == 1  # Stripe's answer, made before the failure
    if first != 200:
        # Not acknowledged: Stripe sends it again.
        assert await post(rig, "refund.failed", failed) == 200

    strays = StrayStore(store.engine, store.writes, clock)
    (row,) = await strays.all()
    assert rig.stripe_api.charge(intent_id)["amount_refunded"] == 0  # the money is taken
    assert row["status"] == STRAY_FAILED  # and an operator is told
    assert (
        rig.notice_metrics.registry.get_sample_value(
            "paygate_stray_charges_total", {"provider": "stripe", "result": "reversal_failed"}
        )
        == 1
    )


async def test_a_refund_failed_event_of_another_charge_leaves_an_open_refund_alone(
    rig: Rig, store: PaymentStore, engine: AsyncEngine
):
    """paygate's refund is pending, with no Stripe reference yet (its answer was lost).
    A ``refund.failed`` of a Refund on another PaymentIntent that carries this refund's id
    in its metadata (copied by hand, or another system's) is not this refund's failure:
    recorded, it released the reservation while Stripe's refund of this charge stands,
    and the amount could be refunded a second time."""
    view, _ = await paid(rig, store)
    _, other_intent = await paid(rig, store)
    pid = view.payment_request_id
    command = refund_of(view, 300, "own-1")
    rig.stripe_api.lose_next = 1
    assert await rig.refunds.handle(command) is Outcome.PENDING
    pending = await rig.refund_store.get(command.refund_id)
    assert pending is not None
    assert pending.provider_reference is None
    made = rig.stripe_api.refunds[stripe_refund_of(rig, command.refund_id)]
    assert made["status"] == "succeeded"  # Stripe refunded this charge
    foreign = {
        **made,
        "id": "re_of_another_charge",
        "payment_intent": other_intent,
        "status": "failed",
        "failure_reason": "expired_or_canceled_card",
    }

    assert await post(rig, "refund.failed", foreign) != 503  # answered, never resent for ever
    refund = await rig.refund_store.get(command.refund_id)
    assert refund is not None
    assert refund.status is RefundStatus.PENDING  # still asked about by the reconciler
    assert await totals(store, pid) == (PaymentStatus.SUCCEEDED, 0, AMOUNT - 300)
    assert await rows_account_for_the_total(engine, pid)


async def test_a_stray_reversal_key_noted_and_never_sent_is_sent_on_the_next_pass(
    rig: Rig, store: PaymentStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
):
    """The sweep writes the reversal's key down and dies before the refund leaves: the next
    pass asks Stripe about that key, finds no refund, lets the charge decide, and sends the
    refund under that same key once: reversed, refunded once."""
    intent_id, sweep = await stray_charge(rig, store, clock)
    real_refund = rig.stripe.refund

    async def dies_before_sending(request: object) -> object:
        raise RuntimeError("the process died after writing the key")

    monkeypatch.setattr(rig.stripe, "refund", dies_before_sending)
    with contextlib.suppress(RuntimeError):  # however the pass ends, nothing reached Stripe
        await sweep.run_once()
    strays = StrayStore(store.engine, store.writes, clock)
    (row,) = await strays.all()
    assert row["reversal_key"] is not None
    assert row["status"] == "reversing"
    assert rig.stripe_api.refunds == {}

    monkeypatch.setattr(rig.stripe, "refund", real_refund)
    clock.now += timedelta(hours=2)
    report = await sweep.run_once()

    assert report.reversed == 1
    (row,) = await strays.all()
    assert row["status"] == "reversed"
    (reversal,) = rig.stripe_api.refunds.values()
    assert reversal["metadata"]["paygateRefundKey"] == row["reversal_key"]
    assert rig.stripe_api.charge(intent_id)["amount_refunded"] == AMOUNT
