"""The sandbox's 3-D-Secure-like payer action: requires_action with a redirect URL on the
sandbox, completed (or denied) by the payer, closed (expired) by paygate, first one wins."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from domain.accounts import Account, AccountType
from domain.money import Money
from domain.next_action import NextActionType
from domain.payments import PaymentMethod
from providers.port import ChargeRequest, ChargeStatus
from providers.sandbox import (
    InProcessSandboxProvider,
    SandboxAcquirer,
    SandboxConfig,
    SandboxHttpProvider,
    SqliteLedger,
    build_sandbox_app,
)
from providers.sandbox.errors import SandboxRefusedError
from providers.sandbox.ledger import Ledger, MemoryLedger
from providers.sandbox.records import SandboxStatus
from tests.support.builders import PAYEE_IBAN, PAYER_ACTION_CARD

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def charge_request(*, capture: bool = True, key: str | None = None) -> ChargeRequest:
    return ChargeRequest(
        attempt_key=key or f"pay_{uuid.uuid4().hex}-a1",
        payment_request_id=f"pay_{uuid.uuid4().hex}",
        amount=Money(1050, "EUR"),
        payment_method=PaymentMethod.CARD,
        payer=Account(AccountType.CARD, PAYER_ACTION_CARD),
        payee=Account(AccountType.BANK_ACCOUNT, PAYEE_IBAN),
        capture=capture,
    )


@pytest.fixture(params=["memory", "sqlite"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    if request.param == "memory":
        yield MemoryLedger()
        return
    sqlite = SqliteLedger(str(tmp_path / "ledger.db"))
    yield sqlite
    await sqlite.stop()


async def sandbox(ledger: Ledger, clock: Clock) -> InProcessSandboxProvider:
    acquirer = SandboxAcquirer(ledger, SandboxConfig(action_ttl_s=600), clock=clock)
    provider = InProcessSandboxProvider(acquirer)
    await provider.start()
    return provider


async def test_the_charge_waits_for_the_payer_then_takes_what_the_payer_chose(ledger):
    clock = Clock()
    provider = await sandbox(ledger, clock)
    request = charge_request()
    waiting = await provider.charge(request)
    assert waiting.status is ChargeStatus.REQUIRES_ACTION
    action = waiting.next_action
    assert action is not None
    assert action.type is NextActionType.REDIRECT_URL
    assert action.url is not None
    assert action.url.endswith(f"/v1/actions/{waiting.provider_reference}")
    assert action.expires_at == clock.now + timedelta(seconds=600)
    # Asked again (a redelivery), the same charge is still waiting: nothing new is made.
    assert await provider.charge(request) == waiting
    assert await provider.charge_status(request.attempt_key) == waiting
    assert (await provider.acquirer.stats()).max_charges_per_reference == 0

    assert waiting.provider_reference is not None
    await provider.acquirer.complete_action(waiting.provider_reference, approve=True)
    paid = await provider.charge_status(request.attempt_key)
    assert paid is not None
    assert paid.status is ChargeStatus.SUCCEEDED
    assert paid.next_action is None
    # Closing after the payer finished keeps the payment: the first ending wins.
    assert await provider.close_charge(request.attempt_key) == paid
    assert (await provider.acquirer.stats()).succeeded == 1


async def test_a_denied_action_declines_and_an_authorize_only_charge_is_held(ledger):
    provider = await sandbox(ledger, Clock())
    denied = await provider.charge(charge_request())
    assert denied.provider_reference is not None
    await provider.acquirer.complete_action(denied.provider_reference, approve=False)
    declined = await provider.charge_by_reference(denied.provider_reference)
    assert declined is not None
    assert declined.status is ChargeStatus.DECLINED
    assert declined.error is not None
    assert declined.error.decline_code == "authentication_failed"

    held = await provider.charge(charge_request(capture=False))
    assert held.provider_reference is not None
    record = await provider.acquirer.complete_action(held.provider_reference, approve=True)
    assert (record.status, record.captured_minor) == (SandboxStatus.AUTHORIZED, 0)


async def test_closing_expires_it_and_the_payer_can_no_longer_pay(ledger):
    clock = Clock()
    provider = await sandbox(ledger, clock)
    request = charge_request()
    waiting = await provider.charge(request)
    closed = await provider.close_charge(request.attempt_key)
    assert closed is not None
    assert closed.status is ChargeStatus.EXPIRED
    assert await provider.close_charge(request.attempt_key) == closed  # closing twice is one close
    assert waiting.provider_reference is not None
    with pytest.raises(SandboxRefusedError):
        await provider.acquirer.complete_action(waiting.provider_reference, approve=True)
    assert await provider.close_charge("pay_unknown-a1") is None
    stats = await provider.acquirer.stats()
    assert (stats.charges, stats.succeeded, stats.max_charges_per_reference) == (1, 0, 0)


async def test_an_action_cannot_be_completed_after_it_expired(ledger):
    clock = Clock()
    provider = await sandbox(ledger, clock)
    waiting = await provider.charge(charge_request())
    clock.now += timedelta(seconds=600)
    assert waiting.provider_reference is not None
    with pytest.raises(SandboxRefusedError) as refused:
        await provider.acquirer.complete_action(waiting.provider_reference, approve=True)
    assert refused.value.code.value == "payment_expired"


async def test_over_http_the_payer_follows_the_url_on_the_sandbox_and_completes_it():
    acquirer = SandboxAcquirer(MemoryLedger(), SandboxConfig(action_ttl_s=600))
    async with TestClient(TestServer(build_sandbox_app(acquirer))) as client:
        base = str(client.make_url("/"))
        async with SandboxHttpProvider(base, timeout_s=5.0) as http:
            request = charge_request()
            waiting = await http.charge(request)
            assert waiting.status is ChargeStatus.REQUIRES_ACTION
            assert waiting.next_action is not None
            assert waiting.next_action.url is not None
            url = waiting.next_action.url
            assert url.startswith(base.rstrip("/") + "/v1/actions/ch_")
            page = await client.session.get(url)
            assert (await page.json())["status"] == "requires_action"
            bad = await client.session.post(url + "/complete", json={"result": "maybe"})
            assert bad.status == 400
            done = await client.session.post(url + "/complete", json={"result": "approve"})
            assert (await done.json())["status"] == "succeeded"
            again = await client.session.post(url + "/complete", json={"result": "deny"})
            assert again.status == 422  # it no longer waits: the payer's first answer stands
            paid = await http.charge_status(request.attempt_key)
            assert paid is not None
            assert paid.status is ChargeStatus.SUCCEEDED
            assert await http.close_charge(request.attempt_key) == paid

            other = charge_request()
            await http.charge(other)
            closed = await http.close_charge(other.attempt_key)
            assert closed is not None
            assert closed.status is ChargeStatus.EXPIRED
            assert await http.close_charge("pay_unknown-a1") is None


def test_a_record_round_trips_through_the_sqlite_columns(tmp_path: Path) -> None:
    # The two columns added for actions are read back as written (and absent ones as None).
    from providers.sandbox import sqlite_ledger

    row = dataclasses.replace(
        _row(),
        status=SandboxStatus.REQUIRES_ACTION,
        action_expires_at=datetime(2026, 1, 2, tzinfo=UTC),
        after_action=SandboxStatus.SUCCEEDED,
    )
    assert sqlite_ledger._from_row(sqlite_ledger._to_row(row)) == row
    assert sqlite_ledger._from_row(sqlite_ledger._to_row(_row())) == _row()


def _row():
    from providers.sandbox.records import ChargeRecord
    from providers.sandbox.refund_records import RefundBehaviour

    return ChargeRecord(
        idempotency_key="pay_1-a1",
        charge_id="ch_1",
        request_hash="0" * 64,
        payment_reference="pay_1",
        amount_minor=1050,
        currency="EUR",
        payer_masked="****3220",
        status=SandboxStatus.SUCCEEDED,
        error_code=None,
        decline_code=None,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        refunds=RefundBehaviour.SUCCEED,
        captured_minor=1050,
    )
