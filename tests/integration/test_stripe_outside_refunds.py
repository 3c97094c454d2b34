"""Refunds made in Stripe's Dashboard (outside paygate) of a payment paygate recorded
``succeeded``, learnt from Stripe's ``charge.refunded`` event through the facade's real
application, verified by the official SDK, recorded on real databases (SQLite and
PostgreSQL).

The Stripe side is tests.support.stripe_lagging_search, served to the real Stripe adapter as
its HTTP client: it keeps the PaymentIntents and Refunds it is sent, refunds "in the
Dashboard" when the test says, and renders each Charge with ``amount_refunded`` the sum of
all its refunds, paygate's and the Dashboard's, as Stripe does. Events are signed by hand as
Stripe documents (tests.support.stripe_events).

Before, ``charge.refunded`` was not read (acknowledged, nothing recorded): such a payment
stayed ``succeeded`` and paygate would offer to refund money Stripe had returned already.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from sqlalchemy import select

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.provider_notices import NoticeRecorder
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from consumer.stray_charges import StraySweep
from domain.accounts import Account, AccountType
from domain.money import Money
from domain.payments import CreatePayment
from domain.refunds import RefundPayment
from domain.status import PaymentStatus
from http_facade.state import METRICS
from persistence.payment_store import PaymentStore
from persistence.provider_refund_store import ProviderRefundStore
from persistence.refund_store import RefundStore
from persistence.stray_store import StrayStore
from persistence.tables import outbox, refunds
from providers.registry import Providers
from providers.stripe import StripeProvider
from providers.stripe.webhooks import StripeWebhooks
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import create_payment
from tests.support.clock import Clock
from tests.support.facade_world import World, world_app
from tests.support.stray_setup import charge_under, handler_giving_up_after_two_calls
from tests.support.stripe_events import OTHER_SECRET, SECRET, event, headers
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
    url: str
    facade_metrics: Metrics


@pytest.fixture
async def rig(store: PaymentStore, metrics: Metrics, clock: Clock) -> AsyncIterator[Rig]:
    stripe_api = LaggingStripe(clock, hidden_for=timedelta(0))
    stripe = StripeProvider("sk_test_lagging", http_client=stripe_api)
    await stripe.start()
    facade = TestServer(
        world_app(
            World(),
            notice_readers={"stripe": StripeWebhooks(secret=SecretStr(SECRET), livemode=False)},
            notice_sink=NoticeRecorder(
                store=store,
                events=PaymentEvents(MESSAGES, "payments.results"),
                strays=StrayStore(store.engine, store.writes, clock),
                refunds=ProviderRefundStore(store.writes, clock),
                clock=clock,
            ),
        )
    )
    await facade.start_server()
    refund_handler = RefundCommandHandler(
        store=RefundStore(store.engine, store.writes),
        providers=Providers.of(stripe),
        events=RefundEvents(MESSAGES, "payments.results"),
        metrics=metrics,
    )
    try:
        yield Rig(
            stripe_api,
            stripe,
            handler_giving_up_after_two_calls(store, stripe, clock),
            refund_handler,
            str(facade.make_url("/v1/notifications/stripe")),
            facade.app[METRICS],
        )
    finally:
        await stripe.stop()
        await facade.close()


async def post_refunded(rig: Rig, charge: dict[str, object]) -> None:
    body = event("charge.refunded", charge)
    async with (
        ClientSession() as session,
        session.post(rig.url, data=body, headers=headers(body)) as resp,
    ):
        assert (resp.status, await resp.json()) == (200, ACKNOWLEDGED)


def card_payment() -> CreatePayment:
    return dataclasses.replace(create_payment(), payer=Account(AccountType.TOKEN, "pm_card_visa"))


async def paid(rig: Rig, store: PaymentStore) -> tuple[str, str]:
    """A card payment paygate records succeeded; its id and its PaymentIntent's."""
    command = card_payment()
    assert await rig.handler.handle(command) is Outcome.SUCCEEDED
    view = await store.get_payment(command.payment_request_id)
    assert view is not None
    assert view.status is PaymentStatus.SUCCEEDED
    assert view.provider_reference is not None
    return command.payment_request_id, view.provider_reference


def paygate_refund(view, amount: int, key: str) -> RefundPayment:
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


async def refund_rows(engine, payment_id: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(refunds.c.id).where(refunds.c.payment_id == payment_id))
        return [row.id for row in rows]


async def payment_statuses(engine, payment_id: str) -> list[PaymentStatus]:
    async with engine.connect() as conn:
        payloads = (await conn.execute(select(outbox.c.payload))).scalars().all()
    decoded = [MESSAGES.decode_result(p) for p in payloads]
    return [
        e.status
        for e in decoded
        if e.payment_request_id == payment_id and getattr(e, "refund_id", None) is None
    ]


async def test_a_dashboard_refund_of_a_succeeded_payment_is_recorded_as_refunded_outside(
    rig: Rig, store: PaymentStore, engine
):
    pid, intent_id = await paid(rig, store)

    rig.stripe_api.refund_outside(intent_id, 300)
    partly = rig.stripe_api.charge(intent_id)
    await post_refunded(rig, partly)
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 300, 750)
    await post_refunded(rig, partly)  # Stripe delivers it again: nothing more
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 300, 750)

    rig.stripe_api.refund_outside(intent_id, 750)
    await post_refunded(rig, rig.stripe_api.charge(intent_id))
    assert await totals(store, pid) == (PaymentStatus.REFUNDED, AMOUNT, 0)
    await post_refunded(rig, partly)  # the first event, late: the total never falls
    assert await totals(store, pid) == (PaymentStatus.REFUNDED, AMOUNT, 0)

    assert await refund_rows(engine, pid) == []  # none of it reads as paygate's refund
    assert await payment_statuses(engine, pid) == [
        PaymentStatus.SUCCEEDED,
        PaymentStatus.PARTIALLY_REFUNDED,
        PaymentStatus.REFUNDED,
    ]
    # Nothing is left to refund through paygate.
    view = await store.get_payment(pid)
    assert await rig.refunds.handle(paygate_refund(view, 1, "after")) is Outcome.REFUSED


async def test_paygates_own_recorded_refunds_in_amount_refunded_are_not_counted_twice(
    rig: Rig, store: PaymentStore, engine
):
    pid, intent_id = await paid(rig, store)
    view = await store.get_payment(pid)
    assert await rig.refunds.handle(paygate_refund(view, 200, "own-1")) is Outcome.SUCCEEDED
    own_only = rig.stripe_api.charge(intent_id)
    assert own_only["amount_refunded"] == 200

    # Stripe's event of paygate's own refund: already counted, nothing changes.
    await post_refunded(rig, own_only)
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 200, 850)

    # 500 more in the Dashboard: amount_refunded 700, of which 200 are paygate's.
    rig.stripe_api.refund_outside(intent_id, 500)
    await post_refunded(rig, rig.stripe_api.charge(intent_id))
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 700, 350)
    await post_refunded(rig, own_only)  # the older event, late
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 700, 350)
    assert len(await refund_rows(engine, pid)) == 1  # paygate's own, and only it

    # Later refunds through paygate are bounded by what remains.
    view = await store.get_payment(pid)
    assert await rig.refunds.handle(paygate_refund(view, 351, "own-2")) is Outcome.REFUSED
    assert await rig.refunds.handle(paygate_refund(view, 350, "own-3")) is Outcome.SUCCEEDED
    assert await totals(store, pid) == (PaymentStatus.REFUNDED, AMOUNT, 0)


async def test_an_event_arriving_while_paygates_refund_is_in_flight_counts_it_once(
    rig: Rig, store: PaymentStore, engine
):
    """Fixed interleaving: paygate reserves a refund of 400 and sends it; Stripe makes it
    (counted in amount_refunded); before paygate hears the answer, 300 are refunded in the
    Dashboard and Stripe's event (amount_refunded 700) arrives. The event must take only the
    300 as made outside; paygate's refund, when it finishes, adds its 400: 700, not 1100."""
    pid, intent_id = await paid(rig, store)
    view = await store.get_payment(pid)
    rig.stripe_api.hold_refunds = True
    in_flight = asyncio.create_task(rig.refunds.handle(paygate_refund(view, 400, "own-1")))
    await asyncio.wait_for(rig.stripe_api.refund_held.wait(), 30)
    rig.stripe_api.refund_outside(intent_id, 300)
    both = rig.stripe_api.charge(intent_id)
    assert both["amount_refunded"] == 700

    await post_refunded(rig, both)
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 300, 350)

    rig.stripe_api.release_refunds.set()
    assert await in_flight is Outcome.SUCCEEDED
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 700, 350)
    await post_refunded(rig, both)  # again, after: nothing more
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 700, 350)
    assert len(await refund_rows(engine, pid)) == 1


async def test_an_event_while_paygates_refund_is_reserved_but_not_yet_at_stripe_counts_no_more(
    rig: Rig, store: PaymentStore
):
    """The same question the other way: paygate's refund of 400 is in flight but Stripe has
    not made it yet, and 300 are refunded in the Dashboard (amount_refunded 300). Taking
    300 less the 400 reserved, the event records nothing now -- less than was refunded
    outside, never more -- and the total stays within what can be accounted for."""
    pid, intent_id = await paid(rig, store)
    view = await store.get_payment(pid)
    rig.stripe_api.refund_outside(intent_id, 300)
    outside_only = rig.stripe_api.charge(intent_id)
    rig.stripe_api.hold_refunds = True
    in_flight = asyncio.create_task(rig.refunds.handle(paygate_refund(view, 400, "own-1")))
    await asyncio.wait_for(rig.stripe_api.refund_held.wait(), 30)

    await post_refunded(rig, outside_only)
    status, refunded, _ = await totals(store, pid)
    assert (status, refunded) == (PaymentStatus.SUCCEEDED, 0)

    rig.stripe_api.release_refunds.set()
    assert await in_flight is Outcome.SUCCEEDED
    await post_refunded(rig, rig.stripe_api.charge(intent_id))  # Stripe's event of it: 700
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 700, 350)


async def test_a_late_event_counting_paygates_refund_that_failed_since_takes_none_of_it(
    rig: Rig, store: PaymentStore, engine
):
    """Fixed interleaving: paygate's refund of 400 reaches Stripe, which counts it in the
    Charge's amount_refunded while it is pending; 300 are refunded in the Dashboard, and
    Stripe makes its event (amount_refunded 700). Then Stripe's refund fails (Stripe lowers
    amount_refunded to 300 again), paygate records it failed and releases its reservation,
    and only then is the event delivered (Stripe retries a delivery for days). The event
    still counts the failed 400: taken as made outside, the payment would record 700
    refunded and refuse the 400 the payer is still owed (money kept that should be
    returned). Only the 300 may be recorded; less is safe, more is not."""
    pid, intent_id = await paid(rig, store)
    view = await store.get_payment(pid)
    rig.stripe_api.hold_refunds = True
    in_flight = asyncio.create_task(rig.refunds.handle(paygate_refund(view, 400, "own-1")))
    await asyncio.wait_for(rig.stripe_api.refund_held.wait(), 30)
    rig.stripe_api.refund_outside(intent_id, 300)
    while_counted = rig.stripe_api.charge(intent_id)
    assert while_counted["amount_refunded"] == 700
    (own,) = [r for r in rig.stripe_api.refunds.values() if r["metadata"]]
    own["status"] = "failed"  # the answer paygate gets: Stripe's refund failed
    own["failure_reason"] = "expired_or_canceled_card"
    rig.stripe_api.release_refunds.set()
    await in_flight
    assert await totals(store, pid) == (PaymentStatus.SUCCEEDED, 0, AMOUNT)
    assert rig.stripe_api.charge(intent_id)["amount_refunded"] == 300

    await post_refunded(rig, while_counted)  # delivered late

    # The Dashboard's 300, and none of the failed 400 (700 before).
    assert await totals(store, pid) == (PaymentStatus.PARTIALLY_REFUNDED, 300, AMOUNT - 300)
    # What the payer is owed can still be refunded through paygate.
    view = await store.get_payment(pid)
    assert await rig.refunds.handle(paygate_refund(view, 400, "own-2")) is Outcome.SUCCEEDED


async def test_a_charge_refunded_event_that_cannot_be_this_captures_changes_nothing(
    rig: Rig, store: PaymentStore
):
    pid, intent_id = await paid(rig, store)
    charge = rig.stripe_api.charge(intent_id)
    too_much = {**charge, "amount_refunded": AMOUNT + 1}
    released = {**charge, "captured": False, "amount_captured": 0, "amount_refunded": AMOUNT}
    not_paygates = {**charge, "metadata": {}, "amount_refunded": 500}
    for body in (too_much, released, not_paygates):
        await post_refunded(rig, body)
        assert await totals(store, pid) == (PaymentStatus.SUCCEEDED, 0, AMOUNT)


async def test_a_stray_stripe_charge_refunded_in_part_in_the_dashboard_is_reversed_for_the_rest(
    rig: Rig, store: PaymentStore, metrics: Metrics, clock: Clock
):
    """Through the SDK: the sweep reads the charge (``latest_charge`` expanded) and refunds
    what it keeps. Before, it asked for the whole amount, more than Stripe keeps."""
    command = card_payment()
    rig.stripe_api.refuse_next = 2  # both calls refused before processing: failed
    assert await rig.handler.handle(command) is Outcome.FAILED
    attempt_key = f"{command.payment_request_id}-a1"
    charged = await charge_under(rig.stripe, command, attempt_key)  # a late call lands
    intent_id = charged.provider_reference
    assert intent_id is not None
    rig.stripe_api.refund_outside(intent_id, 300)
    sweep = StraySweep(
        store=StrayStore(store.engine, store.writes, clock),
        providers=Providers.of(rig.stripe),
        metrics=metrics,
        settle_after=timedelta(minutes=5),
        clock=clock,
    )
    clock.now += timedelta(minutes=6)

    report = await sweep.run_once()

    assert (report.found, report.reversed, report.reversal_failed) == (1, 1, 0)
    reversal = [r for r in rig.stripe_api.refunds.values() if r["metadata"]]
    assert [(r["payment_intent"], r["amount"]) for r in reversal] == [(intent_id, AMOUNT - 300)]
    assert rig.stripe_api.charge(intent_id)["amount_refunded"] == AMOUNT
    failed = await store.get_payment(command.payment_request_id)
    assert failed is not None
    assert failed.status is PaymentStatus.FAILED


async def test_refused_charge_refunded_events_are_counted_by_reason_and_change_nothing(
    rig: Rig, store: PaymentStore
):
    pid, intent_id = await paid(rig, store)
    rig.stripe_api.refund_outside(intent_id, 300)
    charge = rig.stripe_api.charge(intent_id)
    genuine = event("charge.refunded", charge)
    refusals = [
        (genuine, {**headers(genuine), "Stripe-Signature": ""}, "signature"),
        (genuine, headers(genuine, OTHER_SECRET), "signature"),
        (event("charge.refunded", charge, livemode=True), None, "account"),
        (event("charge.refunded", {**charge, "amount": AMOUNT + 1}), None, "mismatch"),
        (event("charge.refunded", {**charge, "currency": 7}), None, "unreadable"),
    ]
    async with ClientSession() as session:
        for body, sent, _ in refusals:
            async with session.post(rig.url, data=body, headers=sent or headers(body)) as resp:
                assert resp.status == 400
    assert await totals(store, pid) == (PaymentStatus.SUCCEEDED, 0, AMOUNT)
    for reason in ("signature", "account", "mismatch", "unreadable"):
        expected = sum(1 for *_, why in refusals if why == reason)
        counted = rig.facade_metrics.registry.get_sample_value(
            "paygate_provider_notifications_refused_total",
            {"provider": "stripe", "reason": reason},
        )
        assert counted == expected, reason
