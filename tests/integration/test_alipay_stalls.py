"""No Alipay payment or refund stays "outcome unknown" for ever, on real databases (SQLite
and PostgreSQL), the handlers and reconcilers calling through the SDK adapter (real RSA2
signing and verification) to the sandbox's Alipay simulator over loopback HTTP.

- a refund Alipay's refund query shows not made (no ``refund_status``) is sent again under
  the same ``out_request_no`` and made, once (it stayed pending, never re-sent);
- a payment whose precreate is answered with no known outcome for ever (``ACQ.SYSTEM_ERROR``
  every time) is re-sent at most ``resend_limit`` times, then withheld and counted for the
  alert (it was re-sent at every pass, for ever);
- the operator ends it only after closing the key at Alipay (``reconcile settle`` refused
  it for ever: Alipay keeps its keys for good);
- answers signed with another key than the configured Alipay public key are counted for
  the alert (they were only warning lines) and never make the payment re-sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from sqlalchemy import select

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.payment_reconciler import PaymentReconciler
from consumer.payment_settlement import PaymentSettlement
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from consumer.refund_reconciler import RefundReconciler
from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.refunds import RefundPayment, RefundStatus
from domain.status import PaymentStatus
from paygate.providers import counting_unverified
from persistence.refund_store import RefundStore
from persistence.stray_store import StrayStore
from persistence.tables import provider_attempts
from providers.alipay import AlipayConfig, AlipayProvider
from providers.registry import Providers
from providers.routing import Router
from providers.sandbox import SandboxAcquirer, build_sandbox_app
from providers.sandbox.alipay import AlipaySimulator, Rsa2Keys
from providers.sandbox.ledger import MemoryLedger
from schemas.payments import PaymentMessages
from tests.support.builders import ACCOUNT_KEY, alipay_payment, unique
from tests.support.metric_samples import sample_sum

pytestmark = pytest.mark.integration

APP_ID = "2021000000000003"
MESSAGES = PaymentMessages.bundled()
MIN_AGE = timedelta(seconds=30)
RESEND_LIMIT = 3
PAYS_AT_ONCE = 2001  # 20.01 yuan
REFUND_NOT_MADE_AT_FIRST = 2008  # 20.08 yuan: pays at once; a refund is made at its 2nd call
PRECREATE_SYSTEM_ERROR = 1009  # 10.09 yuan: precreate answers ACQ.SYSTEM_ERROR every time


@pytest.fixture(scope="module")
def keys() -> tuple[Rsa2Keys, Rsa2Keys, Rsa2Keys]:
    """The app's pair, the simulator's ("Alipay's") pair, and a stranger's."""
    return Rsa2Keys.generate(), Rsa2Keys.generate(), Rsa2Keys.generate()


@dataclass
class Rig:
    simulator: AlipaySimulator
    providers: Providers
    handler: PaymentCommandHandler
    reconciler: PaymentReconciler
    settlement: PaymentSettlement
    refunds: RefundCommandHandler
    refund_reconciler: RefundReconciler
    refund_store: RefundStore


async def _rig(store, metrics, clock, keys, *, alipay_public_pem: str | None = None):
    app_keys, alipay_keys, _ = keys
    simulator = AlipaySimulator(
        alipay_keys=alipay_keys, apps={APP_ID: app_keys.public_pem}, pay_delay_s=0.0
    )
    sandbox = TestServer(build_sandbox_app(SandboxAcquirer(MemoryLedger()), simulator))
    await sandbox.start_server()
    alipay = AlipayProvider(
        AlipayConfig(
            app_id=APP_ID,
            app_private_key=SecretStr(app_keys.private_pem),
            alipay_public_key=alipay_public_pem or alipay_keys.public_pem,
            gateway_url=str(sandbox.make_url("/gateway.do")),
            timeout_s=5.0,
        ),
        clock=clock,
    )
    await alipay.start()
    # As the consumer builds it: answers that do not verify are counted.
    providers = Providers.of(counting_unverified(alipay, metrics))
    events = PaymentEvents(MESSAGES, "payments.results")
    handler = PaymentCommandHandler(
        store=store,
        providers=providers,
        router=Router({"alipay": ["alipay"], "*": ["alipay"]}),
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
    refund_store = RefundStore(store.engine, store.writes, clock)
    refunds = RefundCommandHandler(
        store=refund_store,
        providers=providers,
        events=RefundEvents(MESSAGES, "payments.results"),
        metrics=metrics,
        clock=clock,
    )
    refund_reconciler = RefundReconciler(
        store=refund_store, handler=refunds, metrics=metrics, min_age=MIN_AGE, clock=clock
    )
    rig = Rig(
        simulator,
        providers,
        handler,
        reconciler,
        settlement,
        refunds,
        refund_reconciler,
        refund_store,
    )
    return rig, alipay, sandbox


@pytest.fixture
async def rig(store, metrics, clock, keys) -> AsyncIterator[Rig]:
    made, alipay, sandbox = await _rig(store, metrics, clock, keys)
    try:
        yield made
    finally:
        await alipay.stop()
        await sandbox.close()


@pytest.fixture
async def wrong_key_rig(store, metrics, clock, keys) -> AsyncIterator[Rig]:
    """The adapter configured with a stranger's key as Alipay's public key."""
    made, alipay, sandbox = await _rig(
        store, metrics, clock, keys, alipay_public_pem=keys[2].public_pem
    )
    try:
        yield made
    finally:
        await alipay.stop()
        await sandbox.close()


def _calls(rig: Rig, method: str) -> int:
    return rig.simulator.requests.count(method)


async def _paid(rig: Rig, store, clock, fen: int):
    """A payment whose trade the payer paid at once, recorded succeeded by the reconciler's
    query (no notification endpoint in this rig)."""
    command = alipay_payment(fen)
    assert await rig.handler.handle(command) is Outcome.REQUIRES_ACTION
    await rig.simulator.settled()
    clock.now += MIN_AGE * 2
    await rig.reconciler.run_once()
    paid = await store.get_payment(command.payment_request_id)
    assert paid is not None
    assert paid.status is PaymentStatus.SUCCEEDED
    return command


async def test_a_refund_alipay_shows_not_made_is_sent_again_under_its_key_and_made_once(
    rig: Rig, store, clock
):
    """alipay.trade.refund answers code 10000 without fund_change Y; the refund query shows
    the request without refund_status, which Alipay documents as "not made: call the refund
    again with the same out_request_no". Read as pending, the refund was asked about at every
    pass and never sent again, its amount reserved for good."""
    payment = await _paid(rig, store, clock, REFUND_NOT_MADE_AT_FIRST)
    command = RefundPayment.create(
        idempotency_key=unique("refund"),
        payment_request_id=payment.payment_request_id,
        order_id=payment.order_id,
        amount=Money(500, "CNY"),
        reason="requested_by_customer",
        requested_at=datetime.now(UTC),
    )
    assert await rig.refunds.handle(command) is Outcome.PENDING
    (trade,) = rig.simulator.trades.all()
    assert trade.refunded_fen == 0  # received, not made

    for _ in range(3):
        clock.now += MIN_AGE * 2
        await rig.refund_reconciler.run_once()

    refund = await rig.refund_store.get(command.refund_id)
    assert refund is not None
    assert refund.status is RefundStatus.SUCCEEDED
    # One refund under the one out_request_no, sent twice: made by the second call only.
    assert list(trade.refunds) == [command.refund_id]
    assert trade.refunded_fen == 500
    assert _calls(rig, "alipay.trade.refund") == 2
    view = await store.get_payment(payment.payment_request_id)
    assert view is not None
    assert (view.status, view.refunded_minor, view.refund_reserved_minor) == (
        PaymentStatus.PARTIALLY_REFUNDED,
        500,
        0,
    )


async def test_a_precreate_never_answered_with_an_outcome_is_re_sent_a_bounded_number_of_times(
    rig: Rig, store, clock, metrics
):
    """Alipay keeps out_trade_no for good, so no idempotency window stops the re-sends of a
    key it answers "system error" every time: before, each reconciler pass re-sent it, for
    ever, silently. Now RESEND_LIMIT re-sends, then it is withheld (pending, its order still
    protected), counted at each pass for the alert."""
    command = alipay_payment(PRECREATE_SYSTEM_ERROR)
    assert await rig.handler.handle(command) is Outcome.PENDING
    assert _calls(rig, "alipay.trade.precreate") == 1

    for _ in range(RESEND_LIMIT + 3):
        clock.now += MIN_AGE * 2
        await rig.reconciler.run_once()

    assert _calls(rig, "alipay.trade.precreate") == 1 + RESEND_LIMIT
    assert rig.simulator.trades.all() == []
    withheld = sample_sum(
        metrics, "paygate_resend_limit_reached_total", provider="alipay", operation="payment"
    )
    assert withheld == 3  # the three passes after the last re-send
    pending = await store.get_payment(command.payment_request_id)
    assert pending is not None
    assert pending.status is PaymentStatus.PENDING
    async with store.engine.connect() as conn:
        count = (
            await conn.execute(
                select(provider_attempts.c.resend_count).where(
                    provider_attempts.c.payment_id == command.payment_request_id
                )
            )
        ).scalar_one()
    assert count == RESEND_LIMIT


async def test_a_payment_withheld_by_the_bound_is_failed_only_after_alipay_closed_its_key(
    rig: Rig, store, clock
):
    """The operator's way out: not while a re-send may still be on its way, and only once
    Alipay, asked once more, holds no trade and has closed the key; before, `reconcile
    settle` refused it for good ("its provider still honours its key")."""
    command = alipay_payment(PRECREATE_SYSTEM_ERROR)
    pid = command.payment_request_id
    assert await rig.handler.handle(command) is Outcome.PENDING
    # Below the bound the reconciler's: refused, nothing asked or changed.
    with pytest.raises(PaygateError) as early:
        await rig.settlement.settle(pid, fail_reason="stuck; OPS-1")
    assert early.value.code is ErrorCode.NOT_WITHHELD
    assert "honours its key" in early.value.message

    for _ in range(RESEND_LIMIT + 1):
        clock.now += MIN_AGE * 2
        await rig.reconciler.run_once()

    left = await rig.settlement.settle(pid)
    assert left.action == "left_withheld"
    # The last re-send is minutes old: one of its calls may still reach Alipay.
    with pytest.raises(PaygateError) as too_soon:
        await rig.settlement.settle(pid, fail_reason="precreate refused for ever; OPS-2")
    assert too_soon.value.code is ErrorCode.NOT_WITHHELD
    assert "run the command again then" in too_soon.value.message
    assert _calls(rig, "alipay.trade.close") == 0

    clock.now += timedelta(hours=1)
    settled = await rig.settlement.settle(pid, fail_reason="precreate refused for ever; OPS-2")

    assert (settled.action, settled.outcome) == ("failed_by_operator", "failed")
    assert _calls(rig, "alipay.trade.close") == 1  # the key closed before the failure
    failed = await store.get_payment(pid)
    assert failed is not None
    assert failed.status is PaymentStatus.FAILED
    assert failed.error is not None
    assert failed.error.code is ErrorCode.SETTLED_BY_OPERATOR
    assert "the provider closed it" in failed.error.message
    async with store.engine.connect() as conn:
        verified = (
            await conn.execute(
                select(provider_attempts.c.verified_at).where(provider_attempts.c.payment_id == pid)
            )
        ).scalar_one()
    assert verified is None  # the stray-charge sweep still asks about the key
    precreates = _calls(rig, "alipay.trade.precreate")
    clock.now += MIN_AGE * 2
    await rig.reconciler.run_once()
    assert _calls(rig, "alipay.trade.precreate") == precreates  # never sent again


async def test_answers_that_do_not_verify_are_counted_and_never_re_send_the_payment(
    wrong_key_rig: Rig, store, clock, metrics
):
    """A wrong Alipay public key: every answer fails its signature check and reads as an
    unknown outcome. The reconciler's query fails first, so nothing is re-sent; each answer
    is counted (PaygateProviderAnswersUnverified pages on a steady rate)."""
    rig = wrong_key_rig
    command = alipay_payment(1000)
    assert await rig.handler.handle(command) is Outcome.PENDING
    for _ in range(4):
        clock.now += MIN_AGE * 2
        await rig.reconciler.run_once()

    assert _calls(rig, "alipay.trade.precreate") == 1
    assert _calls(rig, "alipay.trade.query") == 4
    unverified = sample_sum(metrics, "paygate_provider_answers_unverified_total", provider="alipay")
    assert unverified == 5
    pending = await store.get_payment(command.payment_request_id)
    assert pending is not None
    assert pending.status is PaymentStatus.PENDING
