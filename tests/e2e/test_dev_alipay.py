"""``paygate dev`` (what ``make dev`` runs) pays by Alipay out of the box.

A new user's stack: one ``paygate dev`` process, on free ports, in a fresh directory (so the
generated Alipay test keys, API key and certificate are made there, as on a first run).
An Alipay payment answers ``requires_action`` with a QR code; the simulator "scans" it,
pays the trade and sends its signed notification to the facade; the payment becomes
``succeeded``. Only the broker is shared with the other tests (their own topics).
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from paygate.alipay_dev import ALIPAY_KEY_FILE, APP_KEY_FILE
from tests.support.processes import environment_of, start_service
from tests.support.stack import isolated_settings

pytestmark = pytest.mark.e2e

# Fen 00: the simulator's trade waits for its payer (providers.sandbox.alipay.trades).
AMOUNT = "12.00"


def test_paygate_dev_pays_by_alipay_through_the_simulator(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = isolated_settings(
        kafka_bootstrap, tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'paygate.db'}", "dev"
    )
    env = environment_of(settings)
    dev = start_service(
        "dev",
        ["dev"],
        env=env,
        log_dir=tmp_path,
        announce_prefix="PAYGATE_URL=",
        timeout_s=120,
        cwd=tmp_path,
    )
    try:
        assert dev.process.stdout is not None
        sandbox_line = dev.process.stdout.readline()  # printed with the line announced
        assert sandbox_line.startswith("SANDBOX_URL="), sandbox_line
        sandbox_url = sandbox_line.strip().split("=", 1)[1]
        api_key = (tmp_path / ".cache" / "dev-api-key").read_text().strip()
        asyncio.run(
            _pay_by_alipay(dev.announced, sandbox_url, tmp_path / "tls" / "localhost.crt", api_key)
        )
    finally:
        dev.stop()
    assert dev.process.returncode == 0, dev.log()[-3000:]
    # A first run generated the test keys where `paygate dev` keeps them.
    keys = tmp_path / ".cache" / "alipay-dev"
    assert {p.name for p in keys.iterdir()} == {ALIPAY_KEY_FILE, APP_KEY_FILE}
    assert all(p.stat().st_mode & 0o077 == 0 for p in keys.iterdir())


async def _pay_by_alipay(url: str, sandbox_url: str, cert: Path, api_key: str) -> None:
    body = {
        "userId": "user-dev",
        "orderId": f"order-{uuid.uuid4().hex[:12]}",
        "amount": AMOUNT,
        "currency": "CNY",
        "paymentMethod": "alipay",
        "payerAccount": {"type": "wallet", "number": "2088102177846880"},
        "payeeAccount": {"type": "wallet", "number": "2088621955183730"},
    }
    context = ssl.create_default_context(cafile=str(cert))
    async with (
        aiohttp.ClientSession(
            base_url=url,
            connector=aiohttp.TCPConnector(ssl=context),
            headers={"Authorization": f"Bearer {api_key}"},
        ) as facade,
        aiohttp.ClientSession(base_url=sandbox_url) as sandbox,
    ):
        async with facade.post(
            "/v1/payments",
            json=body,
            headers={"Prefer": "wait=30", "Idempotency-Key": f"dev-{uuid.uuid4().hex}"},
        ) as response:
            assert response.status == 200, await response.text()
            waiting: dict[str, Any] = await response.json()
        assert waiting["status"] == "requires_action", waiting
        assert waiting["nextAction"]["type"] == "qr_code"
        assert waiting["nextAction"]["qrCode"].startswith("https://qr.alipay.com/")
        payment_id = waiting["paymentRequestId"]

        async with sandbox.get("/alipay/admin/trades") as response:
            [trade] = (await response.json())["trades"]
        assert (trade["totalAmount"], trade["status"]) == (AMOUNT, "WAIT_BUYER_PAY")
        async with sandbox.post(f"/alipay/admin/trades/{trade['outTradeNo']}/pay") as response:
            assert (await response.json())["paid"] is True

        # The simulator's signed notification, verified by the facade, settles it.
        paid = await _status_becomes(facade, payment_id, "succeeded")
        assert paid["providerReference"] == trade["tradeNo"]


async def _status_becomes(
    session: aiohttp.ClientSession, payment_id: str, wanted: str
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(300):
        async with session.get(f"/v1/payments/{payment_id}") as response:
            body = await response.json()
        if body.get("status") == wanted:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{payment_id} never became {wanted}: {body}")
