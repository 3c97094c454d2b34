"""The Alipay adapter (official SDK: real RSA2 signing and verification) against the
sandbox's Alipay-protocol simulator over loopback HTTP, with key pairs made for the run.

Notifications go to a real HTTP receiver that records them; tests wait for them on a queue
with a bound, never with a sleep.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from domain.accounts import Account, AccountType
from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.next_action import NextActionType
from domain.payments import PaymentMethod
from providers.alipay import AlipayConfig, AlipayMode, AlipayProvider, verify_notification
from providers.alipay.adapter import AlipayAnswerNotVerifiedError, AlipayRequestRejectedError
from providers.errors import ProviderTimeoutError
from providers.port import (
    ChargeOutcome,
    ChargeRequest,
    ChargeStatus,
    ProviderRefundStatus,
    RefundRequest,
)
from providers.sandbox import SandboxAcquirer, build_sandbox_app
from providers.sandbox.alipay import AlipaySimulator, Rsa2Keys
from providers.sandbox.ledger import MemoryLedger
from tests.support.child_env import child_environment

pytestmark = pytest.mark.integration

APP_ID = "2021000000000001"
WAIT = 10.0  # bound on waiting for a notification


@dataclass(frozen=True)
class Keys:
    app: Rsa2Keys
    alipay: Rsa2Keys
    stranger: Rsa2Keys


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(Rsa2Keys.generate(), Rsa2Keys.generate(), Rsa2Keys.generate())


@dataclass
class World:
    simulator: AlipaySimulator
    gateway: str
    notify_url: str
    notifications: asyncio.Queue[dict[str, str]]
    keys: Keys

    def config(self, **changes: object) -> AlipayConfig:
        config = AlipayConfig(
            app_id=APP_ID,
            app_private_key=SecretStr(self.keys.app.private_pem),
            alipay_public_key=self.keys.alipay.public_pem,
            gateway_url=self.gateway,
            notify_url=self.notify_url,
            timeout_s=5.0,
        )
        return dataclasses.replace(config, **changes)  # type: ignore[arg-type]

    async def notified(self) -> dict[str, str]:
        return await asyncio.wait_for(self.notifications.get(), WAIT)


@pytest.fixture
async def world(keys: Keys) -> AsyncIterator[World]:
    simulator = AlipaySimulator(
        alipay_keys=keys.alipay, apps={APP_ID: keys.app.public_pem}, pay_delay_s=0.05
    )
    sandbox = TestServer(build_sandbox_app(SandboxAcquirer(MemoryLedger()), simulator))
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()

    async def receive(request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        await queue.put(form)
        return web.Response(text="success")

    receiver_app = web.Application()
    receiver_app.router.add_post("/notify", receive)
    receiver = TestServer(receiver_app)
    await sandbox.start_server()
    await receiver.start_server()
    try:
        yield World(
            simulator,
            str(sandbox.make_url("/gateway.do")),
            str(receiver.make_url("/notify")),
            queue,
            keys,
        )
    finally:
        await receiver.close()
        await sandbox.close()


def charge(amount: str = "10.00", key: str | None = None) -> ChargeRequest:
    return ChargeRequest(
        attempt_key=key or f"pay_{uuid.uuid4().hex}-a1",
        payment_request_id=f"pay_{uuid.uuid4().hex}",
        amount=Money(int(amount.replace(".", "")), "CNY"),
        payment_method=PaymentMethod.ALIPAY,
        payer=Account(AccountType.WALLET, "2088102177846880"),
        payee=Account(AccountType.WALLET, "2088621955183730"),
    )


async def test_qr_payment_paid_by_the_payer_is_notified_signed_and_queried(world: World):
    async with AlipayProvider(world.config()) as alipay:
        request = charge("10.00")
        waiting = await alipay.charge(request)
        assert waiting.status is ChargeStatus.REQUIRES_ACTION
        action = waiting.next_action
        assert action is not None
        assert action.type is NextActionType.QR_CODE
        assert action.qr_code is not None
        assert action.qr_code.startswith("https://qr.alipay.com/")
        # A resend of the attempt is the same trade and the same QR code, never a second one.
        again = await alipay.charge(request)
        assert again.next_action is not None
        assert again.next_action.qr_code == action.qr_code
        assert len(world.simulator.trades.all()) == 1
        status = await alipay.charge_status(request.attempt_key)
        assert status is not None
        assert status.status is ChargeStatus.REQUIRES_ACTION

        (trade,) = world.simulator.trades.all()
        assert world.simulator.pay(trade)
        notice = await world.notified()
        assert (notice["out_trade_no"], notice["trade_status"]) == (
            request.attempt_key,
            "TRADE_SUCCESS",
        )
        assert notice["total_amount"] == "10.00"
        assert verify_notification(notice, world.keys.alipay.public_pem)
        assert not verify_notification(notice, world.keys.stranger.public_pem)
        assert not verify_notification(
            {**notice, "total_amount": "0.01"}, world.keys.alipay.public_pem
        )

        paid = await alipay.charge_status(request.attempt_key)
        assert paid is not None
        assert (paid.status, paid.provider_reference) == (ChargeStatus.SUCCEEDED, trade.trade_no)
        by_reference = await alipay.charge_by_reference(trade.trade_no)
        assert by_reference == paid
        assert await alipay.charge_status("pay_unknown-a1") is None


async def test_refunds_are_idempotent_by_out_request_no_and_queried(world: World):
    async with AlipayProvider(world.config()) as alipay:
        request = charge("20.01")  # pays at once
        await alipay.charge(request)
        await world.notified()
        paid = await alipay.charge_status(request.attempt_key)
        assert paid is not None
        assert paid.provider_reference is not None
        refund = RefundRequest(
            refund_key=f"{request.payment_request_id}-r1",
            refund_id="ref_1",
            payment_request_id=request.payment_request_id,
            charge_reference=paid.provider_reference,
            amount=Money(550, "CNY"),
        )
        first = await alipay.refund(refund)
        second = await alipay.refund(refund)  # the same out_request_no: one refund
        assert first.status is second.status is ProviderRefundStatus.SUCCEEDED
        (trade,) = world.simulator.trades.all()
        assert trade.refunded_fen == 550
        known = await alipay.refund_status(refund.refund_key, paid.provider_reference)
        assert known is not None
        assert known.status is ProviderRefundStatus.SUCCEEDED
        assert await alipay.refund_status("never-sent", paid.provider_reference) is None
        too_much = dataclasses.replace(refund, refund_key="r2", amount=Money(5000, "CNY"))
        refused = await alipay.refund(too_much)
        assert refused.status is ProviderRefundStatus.FAILED
        assert refused.error is not None
        assert refused.error.code is ErrorCode.REFUND_FAILED


async def test_a_refund_the_merchant_cannot_fund_fails(world: World):
    async with AlipayProvider(world.config()) as alipay:
        request = charge("30.07")  # pays at once; refunds fail
        await alipay.charge(request)
        await world.notified()
        paid = await alipay.charge_status(request.attempt_key)
        assert paid is not None
        assert paid.provider_reference is not None
        outcome = await alipay.refund(
            RefundRequest(
                refund_key="r1",
                refund_id="ref_1",
                payment_request_id=request.payment_request_id,
                charge_reference=paid.provider_reference,
                amount=Money(100, "CNY"),
            )
        )
        assert outcome.status is ProviderRefundStatus.FAILED
        assert outcome.error is not None
        assert outcome.error.decline_code == "ACQ.SELLER_BALANCE_NOT_ENOUGH"


async def test_closing_an_unpaid_trade_expires_it_and_a_paid_one_stays_paid(world: World):
    async with AlipayProvider(world.config()) as alipay:
        unpaid = charge("40.03")  # never pays
        await alipay.charge(unpaid)
        closed = await alipay.close_charge(unpaid.attempt_key)
        assert closed is not None
        assert closed.status is ChargeStatus.EXPIRED
        (trade,) = world.simulator.trades.all()
        assert not world.simulator.pay(trade)  # the payer can no longer pay it
        assert await alipay.close_charge(unpaid.attempt_key) == closed  # closing twice

        paid = charge("40.01")
        await alipay.charge(paid)
        await world.notified()
        kept = await alipay.close_charge(paid.attempt_key)
        assert kept is not None
        assert kept.status is ChargeStatus.SUCCEEDED
        # Nobody opened it (a page.pay link), past its expiry: nothing can be paid.
        never = await alipay.close_charge("pay_never-a1")
        assert never == ChargeOutcome(ChargeStatus.EXPIRED, None)


@pytest.mark.parametrize(
    ("amount", "statuses"),
    [
        ("50.02", ["TRADE_SUCCESS"]),  # pays after a delay
        ("50.05", ["TRADE_SUCCESS", "TRADE_SUCCESS"]),  # notified twice
        ("50.06", ["TRADE_CLOSED"]),  # closed by Alipay
    ],
)
async def test_the_test_amounts_choose_what_is_notified(world: World, amount, statuses):
    async with AlipayProvider(world.config()) as alipay:
        request = charge(amount)
        await alipay.charge(request)
        seen = [(await world.notified())["trade_status"] for _ in statuses]
        assert seen == statuses
        await world.simulator.settled()
        assert world.notifications.empty()


async def test_a_lost_notification_is_never_sent_but_the_query_knows(world: World):
    async with AlipayProvider(world.config()) as alipay:
        request = charge("60.04")
        await alipay.charge(request)
        await world.simulator.settled()
        assert world.notifications.empty()
        paid = await alipay.charge_status(request.attempt_key)
        assert paid is not None
        assert paid.status is ChargeStatus.SUCCEEDED


async def test_a_page_payment_is_a_signed_cashier_url_the_payer_opens(world: World):
    async with AlipayProvider(world.config(mode=AlipayMode.PAGE)) as alipay:
        request = charge("70.00")
        waiting = await alipay.charge(request)
        action = waiting.next_action
        assert action is not None
        assert action.type is NextActionType.REDIRECT_URL
        assert action.url is not None
        assert action.url.startswith(world.gateway + "?")
        assert await alipay.charge_status(request.attempt_key) is None  # not opened yet
        async with alipay._client().get(action.url) as page:  # the payer's browser
            assert page.status == 200
            assert "Alipay cashier" in await page.text()
        status = await alipay.charge_status(request.attempt_key)
        assert status is not None
        assert status.status is ChargeStatus.REQUIRES_ACTION


async def test_a_request_signed_with_the_wrong_key_is_refused_and_changes_nothing(world: World):
    wrong = world.config(app_private_key=SecretStr(world.keys.stranger.private_pem))
    async with AlipayProvider(wrong) as alipay:
        with pytest.raises(AlipayRequestRejectedError, match=r"isv\.invalid-signature"):
            await alipay.charge(charge("80.01"))
    assert world.simulator.trades.all() == []


async def test_an_answer_signed_with_the_wrong_key_is_not_believed(world: World):
    wrong = world.config(alipay_public_key=world.keys.stranger.public_pem)
    async with AlipayProvider(wrong) as alipay:
        with pytest.raises(AlipayAnswerNotVerifiedError) as caught:
            await alipay.charge(charge("80.00"))
    assert caught.value.outcome_unknown  # the trade may exist: ask, never guess


async def test_amounts_are_cny_yuan_with_two_decimals_and_other_currencies_are_refused(
    world: World,
):
    async with AlipayProvider(world.config()) as alipay:
        await alipay.charge(charge("0.10"))
        (trade,) = world.simulator.trades.all()
        assert trade.total_fen == 10
        euro = dataclasses.replace(charge(), amount=Money(1050, "EUR"))
        with pytest.raises(PaygateError) as caught:
            await alipay.charge(euro)
        assert caught.value.code is ErrorCode.UNSUPPORTED_CURRENCY
    assert len(world.simulator.trades.all()) == 1


async def test_a_trade_alipay_refuses_to_open_is_declined_and_a_trade_it_may_hold_is_not(
    world: World,
):
    """Above 100,000,000.00 yuan Alipay opens no trade (``ACQ.TOTAL_FEE_EXCEED``), and
    answers the same every time: a decline, never "outcome unknown". An answer about a
    trade already under the key (another amount: ``ACQ.CONTEXT_INCONSISTENT``) stays
    unknown: that trade may be paid."""
    async with AlipayProvider(world.config()) as alipay:
        too_large = charge("100000000.01")
        refused = await alipay.charge(too_large)
        assert refused.status is ChargeStatus.DECLINED
        assert refused.error is not None
        assert refused.error.code is ErrorCode.PAYMENT_DECLINED
        assert refused.error.decline_code == "ACQ.TOTAL_FEE_EXCEED"
        assert world.simulator.trades.all() == []
        assert await alipay.charge_status(too_large.attempt_key) is None
        # The largest trade Alipay takes opens.
        largest = await alipay.charge(charge("100000000.00"))
        assert largest.status is ChargeStatus.REQUIRES_ACTION

        first = charge("10.00")
        await alipay.charge(first)
        changed = dataclasses.replace(first, amount=Money(1100, "CNY"))
        with pytest.raises(ProviderTimeoutError) as caught:
            await alipay.charge(changed)
        assert caught.value.outcome_unknown
    assert len(world.simulator.trades.all()) == 2


def test_the_trade_expiry_is_sent_in_beijing_time():
    from datetime import UTC, datetime

    from providers.alipay.transformers import time_expire

    at, text = time_expire(datetime(2026, 1, 1, 16, 30, tzinfo=UTC), 900)
    assert at == datetime(2026, 1, 1, 16, 45, tzinfo=UTC)
    assert text == "2026-01-02 00:45:00"
    assert timedelta(0) < at - datetime(2026, 1, 1, 16, 30, tzinfo=UTC)


def test_the_docs_table_of_test_amounts_is_the_codes():
    from pathlib import Path

    from providers.sandbox.alipay import BEHAVIOURS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "sandbox.md").read_text()
    rows = {
        line.split("|")[1].strip().strip("`"): line.split("|")[2].strip().strip("`")
        for line in doc.splitlines()
        if line.startswith("| `x.0")
    }
    assert rows == {f"x.{fen:02d}": behaviour.value for fen, behaviour in BEHAVIOURS.items()}


async def test_the_sandbox_command_serves_the_simulator_from_key_files(keys: Keys, tmp_path):
    import sys

    alipay_key = tmp_path / "alipay.pem"
    alipay_key.write_text(keys.alipay.private_pem)
    app_key = tmp_path / "app_public.pem"
    app_key.write_text(keys.app.public_pem)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "providers.sandbox",
        "--port",
        "0",
        "--alipay-private-key",
        str(alipay_key),
        "--alipay-app",
        f"{APP_ID}={app_key}",
        env=child_environment(),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        assert line.startswith("SANDBOX_URL=")
        base = line.removeprefix("SANDBOX_URL=")
        config = AlipayConfig(
            app_id=APP_ID,
            app_private_key=SecretStr(keys.app.private_pem),
            alipay_public_key=keys.alipay.public_pem,
            gateway_url=f"{base}/gateway.do",
        )
        async with AlipayProvider(config) as alipay:
            waiting = await alipay.charge(charge("12.00"))
            assert waiting.status is ChargeStatus.REQUIRES_ACTION
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 30) == 0
