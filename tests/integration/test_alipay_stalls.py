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
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from paygate.providers import counting_unverified
from persistence.refund_store import RefundStore
from persistence.stray_store import StrayStore
from persistence.tables import provider_attempts
from providers.alipay import AlipayConfig, AlipayProvider
from providers.circuit_breaker import CircuitBreakerProvider
from providers.delegating import DelegatingProvider
from providers.errors import ProviderTimeoutError, ProviderUnavailableError
from providers.port import PaymentProvider
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


class Network(DelegatingProvider):
    """The path to Alipay's gateway for the calls that move money: ``lost`` drops the
    request on its way (the caller times out, Alipay got nothing), ``refused`` refuses the
    connection (nothing sent); None lets it through. Status queries always pass."""

    def __init__(self, inner: PaymentProvider) -> None:
        super().__init__(inner)
        self.fault: str | None = None

    async def _moving_money(self, call):
        if self.fault == "lost":
            raise ProviderTimeoutError(self.name, "no answer in time; outcome unknown")
        if self.fault == "refused":
            raise ProviderUnavailableError(self.name, "could not connect")
        return await call()


async def _rig(
    store,
    metrics,
    clock,
    keys,
    *,
    alipay_public_pem: str | None = None,
    wrap=None,
    retry_policy: RetryPolicy | None = None,
):
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
    provider = counting_unverified(alipay, metrics)
    providers = Providers.of(provider if wrap is None else wrap(provider))
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
        retry_policy=retry_policy or RetryPolicy(),
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


@dataclass
class BreakerRig:
    rig: Rig
    network: Network
    breaker_clock: list[float]


@pytest.fixture
async def breaker_rig(store, metrics, clock, keys) -> AsyncIterator[BreakerRig]:
    """As the consumer builds it, a circuit breaker over the provider (one refused
    connection opens it; its own clock, turned by hand), with a network path in between
    whose faults the test sets; retries without real back-off."""
    paths: list[Network] = []
    breaker_clock = [0.0]

    def wrap(provider: PaymentProvider) -> PaymentProvider:
        paths.append(Network(provider))
        return CircuitBreakerProvider(
            paths[0], failure_threshold=1, open_s=0.05, clock=lambda: breaker_clock[0]
        )

    made, alipay, sandbox = await _rig(
        store,
        metrics,
        clock,
        keys,
        wrap=wrap,
        retry_policy=RetryPolicy(max_attempts=4, base_delay_s=0.001, max_delay_s=0.001),
    )
    try:
        yield BreakerRig(made, paths[0], breaker_clock)
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


async def test_re_sends_that_never_went_out_do_not_count_towards_the_bound(
    breaker_rig: BreakerRig, store, clock, metrics
):
    """The bound is on calls of the key that may have reached Alipay. A re-send refused
    before it went out (a connection refused, then the open circuit breaker failing its
    retries fast) reached nobody: counted, one short refusal withheld for an operator a
    payment whose next re-send opens its trade, and the operator's only way out was to
    fail it."""
    rig, network = breaker_rig.rig, breaker_rig.network
    command = alipay_payment(1000)  # a trade that waits for its payer
    pid = command.payment_request_id
    network.fault = "lost"
    assert await rig.handler.handle(command) is Outcome.PENDING  # in doubt
    assert _calls(rig, "alipay.trade.precreate") == 0  # the request never got there

    network.fault = "refused"
    clock.now += MIN_AGE * 2
    await rig.reconciler.run_once()  # refused, then the open circuit: nothing goes out
    assert _calls(rig, "alipay.trade.precreate") == 0
    assert rig.simulator.trades.all() == []

    network.fault = None
    breaker_clock = breaker_rig.breaker_clock
    breaker_clock[0] += 1.0  # the circuit's open period is over
    clock.now += MIN_AGE * 2
    await rig.reconciler.run_once()

    assert _calls(rig, "alipay.trade.precreate") == 1
    waiting = await store.get_payment(pid)
    assert waiting is not None
    assert waiting.status is PaymentStatus.REQUIRES_ACTION
    withheld = sample_sum(
        metrics, "paygate_resend_limit_reached_total", provider="alipay", operation="payment"
    )
    assert withheld == 0
    async with store.engine.connect() as conn:
        count = (
            await conn.execute(
                select(provider_attempts.c.resend_count).where(
                    provider_attempts.c.payment_id == pid
                )
            )
        ).scalar_one()
    assert count == 1  # the one re-send that went out
