"""Alipay end to end on real databases (SQLite and PostgreSQL): the consumer's handler
charges through the SDK adapter, the sandbox's Alipay simulator plays the payer and sends
signed notifications to the facade's public endpoint, which verifies them through the SDK
and records them as claimed store writes; the reconciler covers a lost notification."""

from __future__ import annotations

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
from consumer.payment_reconciler import PaymentReconciler
from consumer.provider_notices import NoticeRecorder
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from domain.money import Money
from domain.refunds import RefundPayment
from domain.status import PaymentStatus
from http_facade.responses import payment_body
from persistence.provider_refund_store import ProviderRefundStore
from persistence.refund_store import RefundStore
from persistence.stray_store import StrayStore
from persistence.tables import outbox, refunds
from providers.alipay import AlipayConfig, AlipayProvider
from providers.alipay.notifications import AlipayNotifications
from providers.port import ProviderRefundStatus, RefundRequest
from providers.registry import Providers
from providers.routing import Router
from providers.sandbox import SandboxAcquirer, build_sandbox_app
from providers.sandbox.alipay import AlipaySimulator, Rsa2Keys, rsa2
from providers.sandbox.alipay.trades import TradeStatus as SimulatedStatus
from providers.sandbox.ledger import MemoryLedger
from schemas.payments import PaymentMessages
from tests.support.builders import ACCOUNT_KEY, alipay_payment
from tests.support.facade_world import World, world_app

pytestmark = pytest.mark.integration

APP_ID = "2021000000000002"
MESSAGES = PaymentMessages.bundled()
MIN_AGE = timedelta(seconds=30)


@pytest.fixture(scope="module")
def keys() -> tuple[Rsa2Keys, Rsa2Keys, Rsa2Keys]:
    """The app's pair, the simulator's ("Alipay's") pair, and a stranger's."""
    return Rsa2Keys.generate(), Rsa2Keys.generate(), Rsa2Keys.generate()


@dataclass
class Rig:
    simulator: AlipaySimulator
    handler: PaymentCommandHandler
    reconciler: PaymentReconciler
    notify_url: str
    alipay_keys: Rsa2Keys
    stranger: Rsa2Keys
    alipay: AlipayProvider


@pytest.fixture
async def rig(store, metrics, clock, keys) -> AsyncIterator[Rig]:
    app_keys, alipay_keys, stranger = keys
    simulator = AlipaySimulator(
        alipay_keys=alipay_keys, apps={APP_ID: app_keys.public_pem}, pay_delay_s=0.0
    )
    sandbox = TestServer(build_sandbox_app(SandboxAcquirer(MemoryLedger()), simulator))
    events = PaymentEvents(MESSAGES, "payments.results")
    facade = TestServer(
        world_app(
            World(),
            notice_readers={
                "alipay": AlipayNotifications(
                    app_id=APP_ID, alipay_public_key=alipay_keys.public_pem
                )
            },
            notice_sink=NoticeRecorder(
                store=store,
                events=events,
                strays=StrayStore(store.engine, store.writes, clock),
                refunds=ProviderRefundStore(store.writes, clock),
                clock=clock,
            ),
        )
    )
    await sandbox.start_server()
    await facade.start_server()
    notify_url = str(facade.make_url("/v1/notifications/alipay"))
    alipay = AlipayProvider(
        AlipayConfig(
            app_id=APP_ID,
            app_private_key=SecretStr(app_keys.private_pem),
            alipay_public_key=alipay_keys.public_pem,
            gateway_url=str(sandbox.make_url("/gateway.do")),
            notify_url=notify_url,
            timeout_s=5.0,
        ),
        clock=clock,
    )
    await alipay.start()
    handler = PaymentCommandHandler(
        store=store,
        providers=Providers.of(alipay),
        router=Router({"alipay": ["alipay"], "*": ["alipay"]}),
        events=events,
        account_key=ACCOUNT_KEY,
        metrics=metrics,
        clock=clock,
    )
    reconciler = PaymentReconciler(
        store=store, handler=handler, metrics=metrics, min_age=MIN_AGE, clock=clock
    )
    try:
        yield Rig(simulator, handler, reconciler, notify_url, alipay_keys, stranger, alipay)
    finally:
        await alipay.stop()
        await facade.close()
        await sandbox.close()


async def statuses(engine, payment_id: str) -> list[PaymentStatus]:
    async with engine.connect() as conn:
        payloads = (await conn.execute(select(outbox.c.payload))).scalars().all()
    events = [MESSAGES.decode_result(p) for p in payloads]
    return [e.status for e in events if e.payment_request_id == payment_id]


async def post(url: str, form: dict[str, str]) -> tuple[int, str]:
    async with ClientSession() as session, session.post(url, data=form) as resp:
        return resp.status, await resp.text()


async def test_a_paid_trade_is_notified_verified_and_recorded_once(rig: Rig, store, engine):
    command = alipay_payment(1005)  # pays at once, notified twice
    assert await rig.handler.handle(command) is Outcome.REQUIRES_ACTION
    waiting = await store.get_payment(command.payment_request_id)
    assert waiting is not None
    assert waiting.next_action is not None
    assert waiting.next_action.qr_code is not None

    await rig.simulator.settled()

    paid = await store.get_payment(command.payment_request_id)
    assert paid is not None
    assert paid.status is PaymentStatus.SUCCEEDED
    assert paid.provider_reference is not None
    answers = [n.answer or "" for n in rig.simulator.notifications]
    # Both deliveries end acknowledged. The two arrive together: one may find the other
    # holding the payment's claim and be told to come again (503), as Alipay then does.
    assert answers.count("success") == 2
    assert all(a == "success" or "service_unavailable" in a for a in answers)
    assert await statuses(engine, command.payment_request_id) == [
        PaymentStatus.REQUIRES_ACTION,
        PaymentStatus.SUCCEEDED,
    ]


async def test_a_trade_alipay_closed_expires_the_payment(rig: Rig, store):
    command = alipay_payment(1006)
    await rig.handler.handle(command)
    await rig.simulator.settled()
    expired = await store.get_payment(command.payment_request_id)
    assert expired is not None
    assert expired.status is PaymentStatus.EXPIRED


async def test_a_lost_notification_is_covered_by_the_reconciler(rig: Rig, store, clock):
    command = alipay_payment(1004)
    await rig.handler.handle(command)
    await rig.simulator.settled()
    assert rig.simulator.notifications == []
    waiting = await store.get_payment(command.payment_request_id)
    assert waiting is not None
    assert waiting.status is PaymentStatus.REQUIRES_ACTION

    clock.now += MIN_AGE * 2
    report = await rig.reconciler.run_once()

    assert report.resolved == 1
    paid = await store.get_payment(command.payment_request_id)
    assert paid is not None
    assert paid.status is PaymentStatus.SUCCEEDED


async def test_forged_unsigned_and_mismatched_notifications_change_nothing(rig: Rig, store, engine):
    command = alipay_payment(1000)  # waits for the payer
    await rig.handler.handle(command)
    (trade,) = rig.simulator.trades.all()
    assert rig.simulator.trades.pay(trade, trade.created_at, "2088102177846880")
    genuine = rig.simulator.notification(trade)

    unsigned = {k: v for k, v in genuine.items() if k != "sign"}
    forged = _signed({**genuine}, rig.stranger)
    tampered = {**genuine, "total_amount": "0.01"}  # Alipay's signature no longer holds
    other_amount = _signed({**genuine, "total_amount": "9.99"}, rig.alipay_keys)
    other_trade = _signed({**genuine, "out_trade_no": "pay_other-a1"}, rig.alipay_keys)
    for form, expected in [
        (unsigned, 400),
        (forged, 400),
        (tampered, 400),
        (other_amount, 400),
        (other_trade, 404),
    ]:
        status, body = await post(rig.notify_url, form)
        assert status == expected, body
        assert body != "success"
    unchanged = await store.get_payment(command.payment_request_id)
    assert unchanged is not None
    assert unchanged.status is PaymentStatus.REQUIRES_ACTION
    assert await statuses(engine, command.payment_request_id) == [PaymentStatus.REQUIRES_ACTION]

    # The genuine one, no API key needed, answered exactly as Alipay expects; then replayed.
    assert await post(rig.notify_url, genuine) == (200, "success")
    assert await post(rig.notify_url, genuine) == (200, "success")
    paid = await store.get_payment(command.payment_request_id)
    assert paid is not None
    assert paid.status is PaymentStatus.SUCCEEDED
    assert (await statuses(engine, command.payment_request_id)).count(PaymentStatus.SUCCEEDED) == 1


async def test_a_notification_finishes_at_once_a_payment_the_reconciler_holds_back(
    rig: Rig, store, clock
):
    command = alipay_payment(1000)  # waits for the payer
    await rig.handler.handle(command)
    clock.now += MIN_AGE * 2
    assert (await rig.reconciler.run_once()).still_pending == 1
    assert (await rig.reconciler.run_once()).checked == 0  # held back: not asked again yet

    (trade,) = rig.simulator.trades.all()
    assert rig.simulator.trades.pay(trade, trade.created_at, "2088102177846880")
    assert await post(rig.notify_url, rig.simulator.notification(trade)) == (200, "success")

    paid = await store.get_payment(command.payment_request_id)
    assert paid is not None
    assert paid.status is PaymentStatus.SUCCEEDED


async def refund_in_full_outside_paygate(rig: Rig, store, payment_id: str) -> None:
    """The merchant refunds the whole trade from another system (its own Alipay portal
    client, here the SDK adapter), not through paygate: Alipay then closes the trade."""
    (trade,) = rig.simulator.trades.all()
    view = await store.get_payment(payment_id)
    refund = await rig.alipay.refund(
        RefundRequest(
            refund_key="merchant-portal-1",
            refund_id="not-paygates",
            payment_request_id=payment_id,
            charge_reference=trade.trade_no,
            amount=view.amount,
        )
    )
    assert refund.status is ProviderRefundStatus.SUCCEEDED
    assert trade.status is SimulatedStatus.TRADE_CLOSED
    assert trade.paid_at is not None


async def assert_refunded_in_full(store, engine, payment_id: str) -> None:
    """Paid, then refunded in full: what the store, the events and REST say."""
    view = await store.get_payment(payment_id)
    assert view is not None
    assert (view.status, view.refunded_minor, view.refundable_minor) == (
        PaymentStatus.REFUNDED,
        view.amount.minor_units,
        0,
    )
    assert view.payment_result  # the charge itself happened
    assert await statuses(engine, payment_id) == [
        PaymentStatus.REQUIRES_ACTION,
        PaymentStatus.REFUNDED,
    ]
    body = payment_body(view, [])
    assert (body["status"], body["refundedAmount"], body["refundableAmount"]) == (
        "refunded",
        body["amount"],
        "0.00",
    )


async def test_a_closed_trade_notified_with_a_payment_date_records_the_payment_refunded(
    rig: Rig, store, engine
):
    """Alipay's TRADE_CLOSED means closed unpaid, or paid and then fully refunded; with
    gmt_payment it is the second. The payer paid (that notification never reached paygate)
    and the trade was refunded in full outside paygate: succeeded would say paygate keeps
    the money, expired that it was never paid. Neither is true; refunded is."""
    command = alipay_payment(1000)  # waits for the payer
    assert await rig.handler.handle(command) is Outcome.REQUIRES_ACTION
    (trade,) = rig.simulator.trades.all()
    assert rig.simulator.trades.pay(trade, trade.created_at, "2088102177846880")  # no notice
    await refund_in_full_outside_paygate(rig, store, command.payment_request_id)

    await rig.simulator.settled()

    (sent,) = rig.simulator.notifications
    assert (sent.trade_status, sent.answer) == ("TRADE_CLOSED", "success")
    await assert_refunded_in_full(store, engine, command.payment_request_id)


async def test_a_closed_paid_trade_found_by_the_reconcilers_query_records_the_payment_refunded(
    rig: Rig, store, engine, clock
):
    command = alipay_payment(1004)  # pays at once; no notification ever arrives
    assert await rig.handler.handle(command) is Outcome.REQUIRES_ACTION
    await rig.simulator.settled()
    await refund_in_full_outside_paygate(rig, store, command.payment_request_id)
    assert rig.simulator.notifications == []

    clock.now += MIN_AGE * 2
    report = await rig.reconciler.run_once()

    assert report.resolved == 1
    await assert_refunded_in_full(store, engine, command.payment_request_id)


async def refund_outside_paygate(rig: Rig, payment_id: str, amount: Money, key: str) -> None:
    """The merchant refunds part of the trade from its own Alipay portal client (here the SDK
    adapter), not through paygate."""
    (trade,) = rig.simulator.trades.all()
    refund = await rig.alipay.refund(
        RefundRequest(
            refund_key=key,
            refund_id="not-paygates",
            payment_request_id=payment_id,
            charge_reference=trade.trade_no,
            amount=amount,
        )
    )
    assert refund.status is ProviderRefundStatus.SUCCEEDED


async def paid_and_notified(rig: Rig, store) -> str:
    command = alipay_payment(1000)  # waits for the payer
    assert await rig.handler.handle(command) is Outcome.REQUIRES_ACTION
    (trade,) = rig.simulator.trades.all()
    assert rig.simulator.trades.pay(trade, trade.created_at, "2088102177846880")
    assert await post(rig.notify_url, rig.simulator.notification(trade)) == (200, "success")
    paid = await store.get_payment(command.payment_request_id)
    assert paid is not None
    assert paid.status is PaymentStatus.SUCCEEDED
    return command.payment_request_id


async def test_a_succeeded_payment_refunded_outside_paygate_follows_alipays_notifications(
    rig: Rig, store, engine
):
    """Before, it stayed ``succeeded`` whatever Alipay said: paygate would offer to refund
    money Alipay had returned already. Now the notification's refund_fee (and the close of
    a trade refunded in full) is the payment's refunded total, with no refund row."""
    pid = await paid_and_notified(rig, store)
    (trade,) = rig.simulator.trades.all()

    # 3.00 refunded in the merchant's portal; Alipay notifies the trade with its refund_fee.
    await refund_outside_paygate(rig, pid, Money(300, "CNY"), "portal-1")
    assert await post(rig.notify_url, rig.simulator.notification(trade)) == (200, "success")
    view = await store.get_payment(pid)
    assert view is not None
    assert (view.status, view.refunded_minor, view.refundable_minor) == (
        PaymentStatus.PARTIALLY_REFUNDED,
        300,
        700,
    )
    # The same notification again is a replay: nothing more is counted.
    assert await post(rig.notify_url, rig.simulator.notification(trade)) == (200, "success")
    assert (await store.get_payment(pid)).refunded_minor == 300

    # The rest refunded there too: Alipay closes the trade and notifies it (TRADE_CLOSED).
    await refund_outside_paygate(rig, pid, Money(700, "CNY"), "portal-2")
    await rig.simulator.settled()
    view = await store.get_payment(pid)
    assert view is not None
    assert (view.status, view.refunded_minor, view.refundable_minor) == (
        PaymentStatus.REFUNDED,
        1000,
        0,
    )
    assert await statuses(engine, pid) == [
        PaymentStatus.REQUIRES_ACTION,
        PaymentStatus.SUCCEEDED,
        PaymentStatus.PARTIALLY_REFUNDED,
        PaymentStatus.REFUNDED,
    ]
    async with engine.connect() as conn:
        rows = (await conn.execute(select(refunds.c.id).where(refunds.c.payment_id == pid))).all()
    assert rows == []  # none of it reads as a refund paygate made


async def test_paygates_own_refunds_in_alipays_refund_fee_are_not_counted_twice(
    rig: Rig, store, engine, metrics
):
    pid = await paid_and_notified(rig, store)
    (trade,) = rig.simulator.trades.all()
    own = RefundCommandHandler(
        store=RefundStore(store.engine, store.writes),
        providers=Providers.of(rig.alipay),
        events=RefundEvents(MESSAGES, "payments.results"),
        metrics=metrics,
    )
    view = await store.get_payment(pid)
    assert view is not None
    refund = RefundPayment.create(
        idempotency_key="paygate-refund-1",
        payment_request_id=pid,
        order_id=view.order_id,
        amount=Money(200, "CNY"),
        reason=None,
        requested_at=view.created_at,
    )
    assert await own.handle(refund) is Outcome.SUCCEEDED

    # Alipay's refund_fee (2.00) is paygate's own refund: nothing changes.
    assert await post(rig.notify_url, rig.simulator.notification(trade)) == (200, "success")
    view = await store.get_payment(pid)
    assert view is not None
    assert (view.status, view.refunded_minor) == (PaymentStatus.PARTIALLY_REFUNDED, 200)

    # 5.00 more refunded outside: refund_fee 7.00, of which 2.00 are paygate's.
    await refund_outside_paygate(rig, pid, Money(500, "CNY"), "portal-1")
    assert await post(rig.notify_url, rig.simulator.notification(trade)) == (200, "success")
    view = await store.get_payment(pid)
    assert view is not None
    assert (view.status, view.refunded_minor, view.refundable_minor) == (
        PaymentStatus.PARTIALLY_REFUNDED,
        700,
        300,
    )


def _signed(params: dict[str, str], keys: Rsa2Keys) -> dict[str, str]:
    params.pop("sign", None)
    content = rsa2.sign_content(params, leave_out=("sign", "sign_type"))
    return {**params, "sign": rsa2.sign(keys.private_key(), content)}


async def test_a_trade_alipay_refuses_to_open_declines_the_payment_and_frees_the_order(
    rig: Rig, store, clock
):
    """Alipay takes a trade of at most 100,000,000.00 yuan; paygate takes larger amounts.
    Alipay's precreate answers such a trade 40004 ``ACQ.TOTAL_FEE_EXCEED`` and opens none:
    the same request is refused every time. Read as "outcome unknown", the payment stayed
    pending, re-sent by every reconciler pass and refused again, for ever, and its order
    refused every other payment as possibly charged."""
    command = alipay_payment(10_000_000_100)  # 100,000,001.00 yuan
    assert await rig.handler.handle(command) is Outcome.FAILED
    assert rig.simulator.trades.all() == []  # no trade: nothing the payer could pay

    clock.now += MIN_AGE * 2
    report = await rig.reconciler.run_once()
    assert report.checked == 0  # final: nothing left to ask or re-send

    failed = await store.get_payment(command.payment_request_id)
    assert failed is not None
    assert failed.status is PaymentStatus.FAILED
    assert failed.error is not None
    assert (failed.error.code.value, failed.error.decline_code) == (
        "payment_declined",
        "ACQ.TOTAL_FEE_EXCEED",
    )
    assert failed.next_action is None
