"""The sandbox as a real HTTP service on loopback with a SQLite ledger, driven by the adapter."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from domain.accounts import Account, AccountType
from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.payments import PaymentMethod
from domain.refunds import RefundReason
from providers.errors import (
    ProviderRateLimitedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from providers.port import (
    CancelRequest,
    CaptureRequest,
    ChargeRequest,
    ChargeStatus,
    ProviderRefundStatus,
    RefundRequest,
)
from providers.sandbox import (
    SandboxAcquirer,
    SandboxConfig,
    SandboxHttpProvider,
    SandboxRequestRejectedError,
    SqliteLedger,
    build_sandbox_app,
)
from tests.support.builders import (
    DECLINED_CARD,
    FRAUD_CARD,
    INSUFFICIENT_FUNDS_CARD,
    INVALID_ACCOUNT_CARD,
    REFUNDS_FAIL_CARD,
    REFUNDS_PENDING_CARD,
    SLOW_CARD,
    SUCCESS_CARD,
    TIMEOUT_CARD,
    TIMEOUT_THEN_DECLINE_CARD,
    UNAVAILABLE_CARD,
    UNAVAILABLE_ONCE_CARD,
)
from tests.support.child_env import child_environment

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
PAYEE = "DE0012345678"
STARTUP_TIMEOUT_S = 30.0


def charge_request(
    payer: str = SUCCESS_CARD, *, key: str | None = None, amount: int = 1050
) -> ChargeRequest:
    return ChargeRequest(
        attempt_key=key or f"att-{uuid.uuid4().hex}",
        payment_request_id=f"pay_{uuid.uuid4().hex}",
        amount=Money(amount, "EUR"),
        payment_method=PaymentMethod.CARD,
        payer=Account(AccountType.CARD, payer),
        payee=Account(AccountType.BANK_ACCOUNT, PAYEE),
    )


@dataclass
class Sandbox:
    url: str
    acquirer: SandboxAcquirer

    async def get(self, path: str) -> tuple[int, object]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.url + path) as resp,
        ):
            return resp.status, await resp.json()

    async def stats(self) -> dict[str, int]:
        status, body = await self.get("/admin/stats")
        assert status == 200
        assert isinstance(body, dict)
        return body


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    acquirer = SandboxAcquirer(
        SqliteLedger(str(tmp_path / "ledger.db")),
        SandboxConfig(slow_delay_s=0.05, hang_s=0.5),
    )
    async with serve(build_sandbox_app(acquirer)) as url:
        yield Sandbox(url, acquirer)


@pytest.fixture
async def provider(sandbox: Sandbox) -> AsyncIterator[SandboxHttpProvider]:
    """The sandbox over HTTP, not in process: this file tests its service and adapter.

    Generous timeouts: these tests are about what the service answers, not how fast; on a
    loaded 2-core machine twenty concurrent connections once took more than the 2.5 s
    connect timeout a 5 s budget gives (the tests of timeouts use their own providers)."""
    async with SandboxHttpProvider(sandbox.url, timeout_s=20.0) as http:
        yield http


async def test_success(provider: SandboxHttpProvider, sandbox: Sandbox):
    request = charge_request()
    outcome = await provider.charge(request)
    assert outcome.status is ChargeStatus.SUCCEEDED
    assert outcome.error is None
    assert outcome.provider_reference is not None
    assert outcome.provider_reference.startswith("ch_")
    known = await provider.charge_status(request.attempt_key)
    assert known is not None
    assert known.provider_reference == outcome.provider_reference


@pytest.mark.parametrize(
    ("number", "code", "decline_code"),
    [
        (DECLINED_CARD, ErrorCode.PAYMENT_DECLINED, "generic_decline"),
        (INSUFFICIENT_FUNDS_CARD, ErrorCode.INSUFFICIENT_FUNDS, "insufficient_funds"),
        (INVALID_ACCOUNT_CARD, ErrorCode.INVALID_ACCOUNT, "invalid_account"),
        (FRAUD_CARD, ErrorCode.FRAUD_SUSPECTED, "fraudulent"),
    ],
)
async def test_declines(
    provider: SandboxHttpProvider, sandbox: Sandbox, number, code, decline_code
):
    outcome = await provider.charge(charge_request(number))
    assert outcome.status is ChargeStatus.DECLINED
    assert outcome.error is not None
    assert (outcome.error.code, outcome.error.decline_code) == (code, decline_code)
    stats = await sandbox.stats()
    assert (stats["charges"], stats["declined"], stats["succeeded"]) == (1, 1, 0)


async def test_provider_error_charges_nothing(provider: SandboxHttpProvider, sandbox: Sandbox):
    request = charge_request(UNAVAILABLE_CARD)
    with pytest.raises(ProviderUnavailableError) as caught:
        await provider.charge(request)
    assert not caught.value.outcome_unknown
    assert "provider_unavailable" in caught.value.message
    assert (await sandbox.stats())["charges"] == 0
    assert await provider.charge_status(request.attempt_key) is None


async def test_timeout_then_status_finds_the_charge(sandbox: Sandbox):
    request = charge_request(TIMEOUT_CARD)
    async with SandboxHttpProvider(sandbox.url, timeout_s=0.2) as impatient:
        with pytest.raises(ProviderTimeoutError) as caught:
            await impatient.charge(request)
        assert caught.value.outcome_unknown
        known = await impatient.charge_status(request.attempt_key)
    assert known is not None
    assert known.status is ChargeStatus.SUCCEEDED
    assert (await sandbox.stats())["succeeded"] == 1


async def test_timeout_then_declined(sandbox: Sandbox):
    request = charge_request(TIMEOUT_THEN_DECLINE_CARD)
    async with SandboxHttpProvider(sandbox.url, timeout_s=0.2) as impatient:
        with pytest.raises(ProviderTimeoutError):
            await impatient.charge(request)
        known = await impatient.charge_status(request.attempt_key)
    assert known is not None
    assert known.status is ChargeStatus.DECLINED
    assert known.error is not None
    assert known.error.decline_code == "generic_decline"


async def test_slow_success_within_the_timeout(provider: SandboxHttpProvider):
    outcome = await provider.charge(charge_request(SLOW_CARD))
    assert outcome.status is ChargeStatus.SUCCEEDED


async def test_replay_with_the_same_key_charges_once(
    provider: SandboxHttpProvider, sandbox: Sandbox
):
    request = charge_request()
    first = await provider.charge(request)
    second = await provider.charge(request)
    assert second.provider_reference == first.provider_reference
    stats = await sandbox.stats()
    assert stats["charges"] == 1
    assert stats["maxChargesPerReference"] == 1
    assert stats["duplicateKeys"] == 0


async def test_same_key_other_parameters_is_a_conflict(
    provider: SandboxHttpProvider, sandbox: Sandbox
):
    request = charge_request()
    await provider.charge(request)
    other = ChargeRequest(
        attempt_key=request.attempt_key,
        payment_request_id=request.payment_request_id,
        amount=Money(1, "EUR"),
        payment_method=request.payment_method,
        payer=request.payer,
        payee=request.payee,
    )
    with pytest.raises(PaygateError) as caught:
        await provider.charge(other)
    assert caught.value.code is ErrorCode.IDEMPOTENCY_CONFLICT
    assert (await sandbox.stats())["charges"] == 1


async def test_concurrent_same_key_charges_once(provider: SandboxHttpProvider, sandbox: Sandbox):
    request = charge_request()
    outcomes = await asyncio.gather(*(provider.charge(request) for _ in range(10)))
    assert len({outcome.provider_reference for outcome in outcomes}) == 1
    stats = await sandbox.stats()
    assert (stats["charges"], stats["maxChargesPerReference"]) == (1, 1)


async def test_concurrent_distinct_keys_all_charge(provider: SandboxHttpProvider, sandbox: Sandbox):
    outcomes = await asyncio.gather(*(provider.charge(charge_request()) for _ in range(20)))
    assert {outcome.status for outcome in outcomes} == {ChargeStatus.SUCCEEDED}
    assert (await sandbox.stats())["succeeded"] == 20


async def test_keys_with_url_characters_round_trip(provider: SandboxHttpProvider):
    request = charge_request(key=f"order/1?x=#%2F{uuid.uuid4().hex}")
    outcome = await provider.charge(request)
    known = await provider.charge_status(request.attempt_key)
    assert known is not None
    assert known.provider_reference == outcome.provider_reference


async def test_unknown_key_status_is_none(provider: SandboxHttpProvider):
    assert await provider.charge_status(f"never-{uuid.uuid4().hex}") is None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connection_refused_is_unavailable():
    async with SandboxHttpProvider(f"http://127.0.0.1:{_free_port()}", timeout_s=2.0) as http:
        with pytest.raises(ProviderUnavailableError) as caught:
            await http.charge(charge_request())
        assert not caught.value.outcome_unknown
        with pytest.raises(ProviderUnavailableError):
            await http.charge_status("any")


async def test_admin_charges_mask_the_payer(provider: SandboxHttpProvider, sandbox: Sandbox):
    await provider.charge(charge_request())
    await provider.charge(charge_request(INSUFFICIENT_FUNDS_CARD))
    status, body = await sandbox.get("/admin/charges")
    assert status == 200
    assert isinstance(body, dict)
    rows = body["charges"]
    assert [row["payerMasked"] for row in rows] == ["****4242", "****9995"]
    text = str(body)
    assert SUCCESS_CARD not in text
    assert INSUFFICIENT_FUNDS_CARD not in text
    assert PAYEE not in text


def _read_ledger_files(directory: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(directory.glob("ledger.db*")))


async def test_ledger_file_holds_no_clear_number(
    provider: SandboxHttpProvider, sandbox: Sandbox, tmp_path: Path
):
    await provider.charge(charge_request())
    await sandbox.acquirer.stop()  # checkpoint and close, so every byte is in the files
    stored = await asyncio.to_thread(_read_ledger_files, tmp_path)
    assert b"****4242" in stored
    assert SUCCESS_CARD.encode() not in stored
    assert PAYEE.encode() not in stored


async def test_bad_requests_are_400_without_echoing_the_number(sandbox: Sandbox):
    bad_number = "4242 4242 4242 4242"
    body = {
        "amountMinor": 100,
        "currency": "EUR",
        "paymentReference": "pay_1",
        "paymentMethod": "card",
        "payerAccount": {"type": "card", "number": bad_number},
        "payeeAccount": {"type": "card", "number": SUCCESS_CARD},
    }
    async with aiohttp.ClientSession() as session:
        url = sandbox.url + "/v1/charges"
        async with session.post(url, json=body, headers={"Idempotency-Key": "k1"}) as resp:
            assert resp.status == 400
            text = await resp.text()
        assert bad_number not in text
        assert "payerAccount.number" in text
        async with session.post(url, json=body) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["param"] == "Idempotency-Key"
        headers = {"Idempotency-Key": "k2"}
        async with session.post(url, data=b"{not json", headers=headers) as resp:
            assert resp.status == 400
    assert (await sandbox.stats())["charges"] == 0


async def test_healthz(sandbox: Sandbox):
    assert await sandbox.get("/healthz") == (200, {"status": "ok"})


# -- the adapter against answers the sandbox never gives, from a stub --------------------------


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (429, {"Retry-After": "2"}, b"{}", ProviderRateLimitedError),
        (500, {}, b"oops", ProviderTimeoutError),
        (502, {}, b"<html>bad gateway</html>", ProviderTimeoutError),
        (504, {}, b"", ProviderTimeoutError),
        (400, {}, b'{"error": {"code": "invalid_request"}}', SandboxRequestRejectedError),
        (200, {}, b"\xff\xfe not json", ProviderTimeoutError),
    ],
)
async def test_adapter_translates_unusual_answers(status, headers, body, expected):
    async def answer(_request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, headers=headers)

    app = web.Application()
    app.router.add_post("/v1/charges", answer)
    async with serve(app) as url, SandboxHttpProvider(url, timeout_s=2.0) as http:
        with pytest.raises(expected) as caught:
            await http.charge(charge_request())
    if expected is ProviderRateLimitedError:
        assert caught.value.retry_after == 2.0


async def test_a_bare_404_is_not_taken_for_an_unknown_charge():
    # Nothing routed at all: aiohttp answers its own 404, which says nothing about charges.
    async with serve(web.Application()) as url, SandboxHttpProvider(url) as http:
        with pytest.raises(SandboxRequestRejectedError):
            await http.charge_status("att-1")


async def test_server_closing_the_connection_is_outcome_unknown():
    async def close(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()
        await asyncio.sleep(0.5)
        return web.Response()

    app = web.Application()
    app.router.add_post("/v1/charges", close)
    async with serve(app) as url, SandboxHttpProvider(url, timeout_s=2.0) as http:
        with pytest.raises(ProviderTimeoutError) as caught:
            await http.charge(charge_request())
    assert caught.value.outcome_unknown


# -- the standalone process ----------------------------------------------------------------------


async def test_standalone_process(tmp_path: Path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "providers.sandbox",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--ledger",
        str(tmp_path / "process.db"),
        "--seed",
        "1",
        cwd=REPO_ROOT,
        env=child_environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), STARTUP_TIMEOUT_S)
        name, _, url = line.decode().strip().partition("=")
        assert name == "SANDBOX_URL", line
        assert url.startswith("http://127.0.0.1:")
        async with SandboxHttpProvider(url, timeout_s=5.0) as http:
            outcome = await http.charge(charge_request())
        assert outcome.status is ChargeStatus.SUCCEEDED
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15.0) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# -- refunds, authorize/capture, charge by reference over HTTP ---------------------------------


def refund_request(charge_reference: str, amount: int = 400, *, key: str | None = None):
    return RefundRequest(
        refund_key=key or f"rk/{uuid.uuid4().hex}",  # a "/" must stay inside its segment
        refund_id=f"ref_{uuid.uuid4().hex}",
        payment_request_id="pay_1",
        charge_reference=charge_reference,
        amount=Money(amount, "EUR"),
        reason=RefundReason.DUPLICATE,
    )


async def _charged(provider: SandboxHttpProvider, payer: str = SUCCESS_CARD) -> str:
    outcome = await provider.charge(charge_request(payer, amount=1000))
    assert outcome.provider_reference is not None
    return outcome.provider_reference


async def test_refund_over_http_replays_and_lists(provider: SandboxHttpProvider, sandbox: Sandbox):
    charge = await _charged(provider)
    request = refund_request(charge, 600)
    outcome = await provider.refund(request)
    assert outcome.status is ProviderRefundStatus.SUCCEEDED
    assert outcome.provider_reference is not None
    again = await provider.refund(request)
    assert again.provider_reference == outcome.provider_reference
    known = await provider.refund_status(request.refund_key, charge)
    assert known is not None
    assert known.provider_reference == outcome.provider_reference
    assert await provider.refund_status("rk-never", charge) is None
    status, body = await sandbox.get("/admin/refunds")
    assert status == 200
    assert isinstance(body, dict)
    [row] = body["refunds"]
    assert (row["idempotencyKey"], row["chargeId"], row["amountMinor"], row["reason"]) == (
        request.refund_key,
        charge,
        600,
        "duplicate",
    )


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"amount": Money(1001, "EUR")}, ErrorCode.REFUND_EXCEEDS_CAPTURED),
        ({"amount": Money(100, "USD")}, ErrorCode.CURRENCY_MISMATCH),
        ({"charge_reference": "ch_unknown"}, ErrorCode.PAYMENT_NOT_REFUNDABLE),
    ],
)
async def test_refused_refunds_over_http_are_catalogue_errors(
    provider: SandboxHttpProvider, changes, code
):
    request = dataclasses.replace(refund_request(await _charged(provider)), **changes)
    with pytest.raises(PaygateError) as caught:
        await provider.refund(request)
    assert caught.value.code is code


async def test_refund_key_reused_with_other_parameters_over_http(provider: SandboxHttpProvider):
    charge = await _charged(provider)
    await provider.refund(refund_request(charge, 100, key="rk-1"))
    with pytest.raises(PaygateError) as caught:
        await provider.refund(refund_request(charge, 200, key="rk-1"))
    assert caught.value.code is ErrorCode.IDEMPOTENCY_CONFLICT


async def test_pending_and_failing_refund_numbers_over_http(tmp_path: Path):
    acquirer = SandboxAcquirer(
        SqliteLedger(str(tmp_path / "l.db")), SandboxConfig(refund_settle_s=0.2)
    )
    async with (
        serve(build_sandbox_app(acquirer)) as url,
        SandboxHttpProvider(url, timeout_s=5.0) as provider,
    ):
        pending = refund_request(await _charged(provider, REFUNDS_PENDING_CARD))
        assert (await provider.refund(pending)).status is ProviderRefundStatus.PENDING
        deadline = asyncio.get_running_loop().time() + 5.0
        while True:
            known = await provider.refund_status(pending.refund_key, pending.charge_reference)
            assert known is not None
            if known.status is ProviderRefundStatus.SUCCEEDED:
                break
            assert known.status is ProviderRefundStatus.PENDING
            assert asyncio.get_running_loop().time() < deadline, "the refund never settled"
            await asyncio.sleep(0.05)
        failed = await provider.refund(refund_request(await _charged(provider, REFUNDS_FAIL_CARD)))
        assert failed.status is ProviderRefundStatus.FAILED
        assert failed.error is not None
        assert (failed.error.code, failed.error.decline_code) == (
            ErrorCode.REFUND_FAILED,
            "refund_declined",
        )


async def test_authorize_capture_and_charge_by_reference_over_http(
    provider: SandboxHttpProvider, sandbox: Sandbox
):
    request = dataclasses.replace(charge_request(amount=1000), capture=False)
    authorized = await provider.charge(request)
    assert authorized.status is ChargeStatus.AUTHORIZED
    charge = authorized.provider_reference
    assert charge is not None
    found = await provider.charge_by_reference(charge)
    assert found is not None
    assert found.status is ChargeStatus.AUTHORIZED
    assert await provider.charge_by_reference("ch_unknown") is None
    capture = CaptureRequest("cap-1", request.payment_request_id, charge, Money(800, "EUR"))
    assert (await provider.capture(capture)).status is ChargeStatus.SUCCEEDED
    assert (await provider.capture(capture)).status is ChargeStatus.SUCCEEDED  # a replay
    with pytest.raises(PaygateError) as conflict:
        await provider.capture(dataclasses.replace(capture, amount=Money(700, "EUR")))
    assert conflict.value.code is ErrorCode.IDEMPOTENCY_CONFLICT
    with pytest.raises(PaygateError) as again:
        await provider.capture(dataclasses.replace(capture, capture_key="cap-2"))
    assert again.value.code is ErrorCode.INVALID_REQUEST
    with pytest.raises(PaygateError) as above:
        await provider.refund(refund_request(charge, 801))
    assert above.value.code is ErrorCode.REFUND_EXCEEDS_CAPTURED
    status, body = await sandbox.get("/admin/charges")
    assert status == 200
    assert isinstance(body, dict)
    [row] = body["charges"]
    assert (row["status"], row["capturedMinor"], row["captureKey"]) == ("succeeded", 800, "cap-1")


async def test_fails_first_number_over_http(provider: SandboxHttpProvider):
    first = charge_request(UNAVAILABLE_ONCE_CARD)
    with pytest.raises(ProviderUnavailableError):
        await provider.charge(first)
    retry = dataclasses.replace(first, attempt_key=first.attempt_key + "-a2")
    assert (await provider.charge(retry)).status is ChargeStatus.SUCCEEDED


# -- cancel (void) and expiry of an authorization over HTTP --------------------------------------


async def _authorized(provider: SandboxHttpProvider) -> tuple[ChargeRequest, str]:
    request = dataclasses.replace(charge_request(amount=1000), capture=False)
    outcome = await provider.charge(request)
    assert outcome.status is ChargeStatus.AUTHORIZED
    assert outcome.provider_reference is not None
    return request, outcome.provider_reference


async def test_cancel_voids_an_authorization_over_http(
    provider: SandboxHttpProvider, sandbox: Sandbox
):
    request, charge = await _authorized(provider)
    cancel = CancelRequest("pay-1-cancel", request.payment_request_id, charge)
    assert (await provider.cancel(cancel)).status is ChargeStatus.CANCELED
    assert (await provider.cancel(cancel)).status is ChargeStatus.CANCELED  # a replay
    found = await provider.charge_by_reference(charge)
    assert found is not None
    assert found.status is ChargeStatus.CANCELED
    # Nothing is held any more: no capture, and the charge never counted as taken.
    with pytest.raises(PaygateError) as refused:
        await provider.capture(CaptureRequest("cap-1", "pay-1", charge, Money(1000, "EUR")))
    assert refused.value.code is ErrorCode.PAYMENT_NOT_CAPTURABLE
    assert (await sandbox.stats())["succeeded"] == 0


async def test_a_captured_charge_cannot_be_voided_over_http(provider: SandboxHttpProvider):
    request, charge = await _authorized(provider)
    capture = CaptureRequest("cap-1", request.payment_request_id, charge, Money(400, "EUR"))
    assert (await provider.capture(capture)).status is ChargeStatus.SUCCEEDED
    with pytest.raises(PaygateError) as refused:
        await provider.cancel(CancelRequest("pay-1-cancel", request.payment_request_id, charge))
    assert refused.value.code is ErrorCode.PAYMENT_NOT_CANCELABLE
    with pytest.raises(PaygateError) as unknown:
        await provider.cancel(CancelRequest("pay-2-cancel", "pay-2", "ch_unknown"))
    assert unknown.value.code is ErrorCode.NOT_FOUND


async def test_an_authorization_expires_after_its_hold_over_http(tmp_path: Path):
    """The hold is a setting of the acquirer; its clock is the test's."""
    now = [datetime.now(UTC)]
    acquirer = SandboxAcquirer(
        SqliteLedger(str(tmp_path / "l.db")),
        SandboxConfig(authorization_hold_s=60.0),
        clock=lambda: now[0],
    )
    async with (
        serve(build_sandbox_app(acquirer)) as url,
        SandboxHttpProvider(url, timeout_s=5.0) as provider,
    ):
        request, charge = await _authorized(provider)
        now[0] += timedelta(seconds=59)
        found = await provider.charge_by_reference(charge)
        assert found is not None
        assert found.status is ChargeStatus.AUTHORIZED
        now[0] += timedelta(seconds=1)
        found = await provider.charge_by_reference(charge)
        assert found is not None
        assert found.status is ChargeStatus.EXPIRED
        with pytest.raises(PaygateError) as refused:
            await provider.capture(
                CaptureRequest("cap-1", request.payment_request_id, charge, Money(1000, "EUR"))
            )
        assert refused.value.code is ErrorCode.PAYMENT_NOT_CAPTURABLE
        # A void of an expired hold answers it expired: there is nothing left to release.
        cancel = CancelRequest("pay-1-cancel", request.payment_request_id, charge)
        assert (await provider.cancel(cancel)).status is ChargeStatus.EXPIRED
