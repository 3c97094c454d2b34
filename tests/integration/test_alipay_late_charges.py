"""Money Alipay takes under a key the payment no longer stands on, heard of only through
Alipay's signed notification: it must reach the stray-charge sweep (found, counted,
reversed), not end in a log line.

The situation, on real databases with the SDK adapter against the sandbox's Alipay
simulator: a page payment (``alipay.trade.page.pay``: the trade exists only once the payer
opens the cashier) whose action expired unopened is closed by paygate (``alipay.trade.close``
answers ``ACQ.TRADE_NOT_EXIST``, so the payment is ``expired``); the sweep asks about the
attempt once and Alipay still has no trade, so it is marked verified; then the payer opens
the cashier and pays, Alipay's clock being a few seconds behind paygate's (any way Alipay
accepts a payment after paygate's check does the same), and Alipay notifies paygate. The
same with the payer paying, and Alipay's notice reopening the key, while the sweep is asking
about it: between Alipay's "no trade" and the sweep's mark (a deterministic interleaving).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from sqlalchemy import select, update

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.payment_reconciler import PaymentReconciler
from consumer.provider_notices import NoticeRecorder
from consumer.stray_charges import StraySweep
from domain.next_action import NextAction
from domain.payments import CreatePayment
from domain.status import PaymentStatus
from persistence.attempts import ATTEMPT_FAILED
from persistence.payment_store import PaymentStore
from persistence.provider_refund_store import ProviderRefundStore
from persistence.stray_store import StrayCandidate, StrayStore
from persistence.tables import payments, provider_attempts
from providers.alipay import AlipayConfig, AlipayMode, AlipayProvider
from providers.alipay.notifications import AlipayNotifications
from providers.registry import Providers
from providers.routing import Router
from providers.sandbox import SandboxAcquirer, build_sandbox_app
from providers.sandbox.alipay import AlipaySimulator, Rsa2Keys
from providers.sandbox.ledger import MemoryLedger
from schemas.payments import PaymentMessages
from tests.support.builders import ACCOUNT_KEY, alipay_payment
from tests.support.facade_world import World, world_app
from tests.support.interleaving import Gate, Interleaving
from tests.support.metric_samples import sample_sum

pytestmark = pytest.mark.integration

APP_ID = "2021000000000002"
MESSAGES = PaymentMessages.bundled()
MIN_AGE = timedelta(seconds=30)
ACTION_TTL_S = 60.0
SETTLE = timedelta(seconds=1)
ALIPAY_BEHIND = timedelta(seconds=5)


@pytest.fixture(scope="module")
def keys() -> tuple[Rsa2Keys, Rsa2Keys]:
    return Rsa2Keys.generate(), Rsa2Keys.generate()


@dataclass
class Rig:
    simulator: AlipaySimulator
    alipay: AlipayProvider
    handler: PaymentCommandHandler
    reconciler: PaymentReconciler
    sweep: StraySweep
    strays: StrayStore
    notify_url: str


@pytest.fixture
async def rig(store, metrics, clock, keys) -> AsyncIterator[Rig]:
    app_keys, alipay_keys = keys
    simulator = AlipaySimulator(
        alipay_keys=alipay_keys,
        apps={APP_ID: app_keys.public_pem},
        pay_delay_s=0.0,
        clock=lambda: clock.now - ALIPAY_BEHIND,
    )
    sandbox = TestServer(build_sandbox_app(SandboxAcquirer(MemoryLedger()), simulator))
    events = PaymentEvents(MESSAGES, "payments.results")
    strays = StrayStore(store.engine, store.writes, clock)
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
                strays=strays,
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
            mode=AlipayMode.PAGE,
            action_ttl_s=ACTION_TTL_S,
        ),
        clock=clock,
    )
    await alipay.start()
    providers = Providers.of(alipay)
    handler = PaymentCommandHandler(
        store=store,
        providers=providers,
        router=Router({"alipay": ["alipay"], "*": ["alipay"]}),
        events=events,
        account_key=ACCOUNT_KEY,
        metrics=metrics,
        clock=clock,
    )
    reconciler = PaymentReconciler(
        store=store, handler=handler, metrics=metrics, min_age=MIN_AGE, clock=clock
    )
    sweep = StraySweep(
        store=strays, providers=providers, metrics=metrics, settle_after=SETTLE, clock=clock
    )
    try:
        yield Rig(simulator, alipay, handler, reconciler, sweep, strays, notify_url)
    finally:
        await alipay.stop()
        await facade.close()
        await sandbox.close()


async def _cashier(store: PaymentStore, command: CreatePayment) -> tuple[NextAction, str]:
    """The next action of a payment waiting for its payer, and its cashier's address."""
    waiting = await store.get_payment(command.payment_request_id)
    assert waiting is not None
    assert waiting.next_action is not None
    cashier = waiting.next_action.url
    assert cashier is not None
    return waiting.next_action, cashier


async def test_a_charge_notified_after_the_sweep_verified_its_key_is_found_and_reversed(
    rig: Rig, store, clock, metrics
):
    command = alipay_payment(1000)  # waits for the payer
    assert await rig.handler.handle(command) is Outcome.REQUIRES_ACTION
    action, cashier = await _cashier(store, command)

    # The action expires unopened: paygate closes the trade (Alipay has none) and expires it.
    clock.now += timedelta(seconds=ACTION_TTL_S + 1)  # older than MIN_AGE too
    await rig.reconciler.run_once()
    expired = await store.get_payment(command.payment_request_id)
    assert expired is not None
    assert expired.status is PaymentStatus.EXPIRED
    # The sweep's one question about the closed attempt: still no trade, so verified.
    clock.now += SETTLE * 2
    assert (await rig.sweep.run_once()).verified == 1

    # The payer opens the cashier within Alipay's time and pays; Alipay notifies paygate.
    assert clock.now - ALIPAY_BEHIND < action.expires_at
    async with ClientSession() as browser, browser.get(cashier) as page:
        assert page.status == 200
    (trade,) = rig.simulator.trades.all()
    assert rig.simulator.pay(trade)
    await rig.simulator.settled()
    assert [n.answer for n in rig.simulator.notifications] == ["success"]

    clock.now += timedelta(hours=1)
    report = await rig.sweep.run_once()

    assert report.reversed == 1  # found (counted below), then reversed in the same pass
    assert trade.refunded_fen == 1000
    (stray,) = await rig.strays.all()
    assert stray["attempt_key"] == f"{command.payment_request_id}-a1"
    assert stray["status"] == "reversed"
    found = sample_sum(metrics, "paygate_stray_charges_total", provider="alipay", result="found")
    assert found == 1
    still = await store.get_payment(command.payment_request_id)
    assert still is not None
    assert still.status is PaymentStatus.EXPIRED  # the payment's story is unchanged


class ParkedBeforeMark(StrayStore):
    """The real store; its mark of a verified key stops at the gate first: the sweep has
    Alipay's answer and has not recorded it yet."""

    def __init__(self, gate: Gate, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._gate = gate

    async def mark_verified(self, candidate: StrayCandidate) -> bool:
        await self._gate.checkpoint("sweep: Alipay answered, about to mark")
        return await super().mark_verified(candidate)


async def test_a_charge_notified_while_the_sweep_asks_about_its_key_is_found_and_reversed(
    rig: Rig, store, clock, metrics, engine
):
    """The payer pays, and Alipay's notice reopens the key, after Alipay told the sweep
    there is no trade and before the sweep marks the key verified: the mark must not undo
    the reopen (persistence.stray_store, the check generation)."""
    command = alipay_payment(1000)  # waits for the payer
    assert await rig.handler.handle(command) is Outcome.REQUIRES_ACTION
    action, cashier = await _cashier(store, command)
    clock.now += timedelta(seconds=ACTION_TTL_S + 1)  # expires unopened, Alipay has no trade
    await rig.reconciler.run_once()
    clock.now += SETTLE * 2
    assert clock.now - ALIPAY_BEHIND < action.expires_at  # still payable there
    gate = Gate()
    parked = StraySweep(
        store=ParkedBeforeMark(gate, store.engine, store.writes, clock),
        providers=Providers.of(rig.alipay),
        metrics=metrics,
        settle_after=SETTLE,
        clock=clock,
    )

    async def the_payer_pays():
        await gate.checkpoint("payer: at the cashier")
        async with ClientSession() as browser, browser.get(cashier) as page:
            assert page.status == 200
        (trade,) = rig.simulator.trades.all()
        assert rig.simulator.pay(trade)
        await rig.simulator.settled()  # notified, answered: the key is reopened
        return trade

    interleaving = Interleaving([1, 0])  # the payer first, then the sweep's mark
    gate.interleaving = interleaving
    first, trade = await interleaving.run([parked.run_once, the_payer_pays])
    gate.interleaving = None

    assert [n.answer for n in rig.simulator.notifications] == ["success"]
    assert (first.checked, first.verified, first.reopened) == (1, 0, 1)
    assert await _unverified(engine) == [f"{command.payment_request_id}-a1"]

    report = await rig.sweep.run_once()  # Alipay now answers: paid

    assert (report.found, report.reversed) == (1, 1)
    assert trade.refunded_fen == 1000
    (stray,) = await rig.strays.all()
    assert (stray["attempt_key"], stray["status"]) == (
        f"{command.payment_request_id}-a1",
        "reversed",
    )
    found = sample_sum(metrics, "paygate_stray_charges_total", provider="alipay", result="found")
    assert found == 1
    expired = await store.get_payment(command.payment_request_id)
    assert expired is not None
    assert expired.status is PaymentStatus.EXPIRED


async def test_a_replayed_notice_of_the_payments_own_charge_hands_nothing_to_the_sweep(
    rig: Rig, store, clock, engine
):
    command = alipay_payment(1000)  # waits for the payer
    await rig.handler.handle(command)
    _action, cashier = await _cashier(store, command)
    async with ClientSession() as browser, browser.get(cashier) as page:
        assert page.status == 200
    (trade,) = rig.simulator.trades.all()
    assert rig.simulator.pay(trade)
    await rig.simulator.settled()
    paid = await store.get_payment(command.payment_request_id)
    assert paid is not None
    assert paid.status is PaymentStatus.SUCCEEDED
    clock.now += timedelta(hours=1)
    await rig.sweep.run_once()  # marks the payment's own charge verified
    assert await _unverified(engine) == []

    status, body = await _post(rig, rig.simulator.notification(trade))  # Alipay resends

    assert (status, body) == (200, "success")
    assert await _unverified(engine) == []
    report = await rig.sweep.run_once()
    assert report.checked == 0
    assert await rig.strays.all() == []


async def _unverified(engine) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(provider_attempts.c.attempt_key).where(provider_attempts.c.verified_at.is_(None))
        )
        return [row.attempt_key for row in rows]


async def _post(rig: Rig, form: dict[str, str]) -> tuple[int, str]:
    async with ClientSession() as session, session.post(rig.notify_url, data=form) as resp:
        return resp.status, await resp.text()


async def test_a_paid_notice_for_the_own_attempt_of_a_failed_payment_is_found_and_reversed(
    rig: Rig, store, clock, engine, metrics
):
    """The payment was recorded ``failed`` while its trade could still be paid (forced in
    the store, as a bug or a query racing the payer would): the late ``paid`` notice of its
    own attempt reaches the sweep, which refunds it; the payment stays ``failed``."""
    command = alipay_payment(1000)  # waits for the payer
    await rig.handler.handle(command)
    _action, cashier = await _cashier(store, command)
    async with engine.begin() as conn:
        await conn.execute(
            update(payments)
            .where(payments.c.id == command.payment_request_id)
            .values(status=PaymentStatus.FAILED.value)
        )
        await conn.execute(
            update(provider_attempts)
            .where(provider_attempts.c.payment_id == command.payment_request_id)
            .values(status=ATTEMPT_FAILED, finished_at=clock.now)
        )
    clock.now += SETTLE * 2
    assert (await rig.sweep.run_once()).verified == 1  # no trade yet

    async with ClientSession() as browser, browser.get(cashier) as page:
        assert page.status == 200
    (trade,) = rig.simulator.trades.all()
    assert rig.simulator.pay(trade)
    await rig.simulator.settled()
    assert [n.answer for n in rig.simulator.notifications] == ["success"]

    report = await rig.sweep.run_once()

    assert report.reversed == 1
    assert trade.refunded_fen == 1000
    found = sample_sum(metrics, "paygate_stray_charges_total", provider="alipay", result="found")
    assert found == 1
    failed = await store.get_payment(command.payment_request_id)
    assert failed is not None
    assert failed.status is PaymentStatus.FAILED
