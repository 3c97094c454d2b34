"""``paygate webhooks list|retry`` against real databases, as an operator runs them."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, update

from domain.webhook_events import WebhookEvent
from paygate.settings import DEV_VAULT_KEK
from paygate.webhooks_command import main as webhooks_main
from persistence.database import Database
from persistence.engine import create_engine
from persistence.webhook_fanout import delivery_row
from persistence.webhook_tables import webhook_deliveries
from tests.support.ops_probe import eventually
from tests.support.processes import start_service
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.webhook_vault import with_sealed_secrets

pytestmark = pytest.mark.integration


async def _a_failed_delivery(database_url: str) -> tuple[str, str]:
    """An endpoint of client ``acme`` and a delivery to it that gave up; their ids."""
    engine = create_engine(database_url)
    try:
        db = with_sealed_secrets(await Database.open(engine), DEV_VAULT_KEK)
        created = await db.webhooks.create_endpoint("acme", "https://hooks.example/in", ["*"], None)
        event = WebhookEvent("evt_1", "payment.succeeded", "pay_1", '{"type":"payment.succeeded"}')
        row = delivery_row(created.endpoint.id, event, datetime.now(UTC))
        async with engine.begin() as conn:
            await conn.execute(insert(webhook_deliveries).values(**row))
            await conn.execute(
                update(webhook_deliveries).values(
                    status="failed", attempts=17, next_attempt_at=None, last_status_code=500
                )
            )
        return created.endpoint.id, row["id"]
    finally:
        await engine.dispose()


def test_the_cli_lists_failed_deliveries_and_sends_one_again(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint_id, delivery_id = asyncio.run(_a_failed_delivery(database_url))
    monkeypatch.setenv("PAYGATE_DATABASE_URL", database_url)

    assert webhooks_main(["list", "--status", "failed"]) == 0
    [listed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (listed["id"], listed["endpointId"], listed["attempts"]) == (
        delivery_id,
        endpoint_id,
        17,
    )
    assert (listed["status"], listed["lastResponseCode"]) == ("failed", 500)
    assert webhooks_main(["list", "--client", "someone-else"]) == 0
    assert capsys.readouterr().out == ""

    assert webhooks_main(["retry", delivery_id]) == 0
    retried = json.loads(capsys.readouterr().out)
    assert (retried["status"], retried["attempts"]) == ("pending", 17)
    assert retried["nextAttemptAt"] is not None
    assert webhooks_main(["list", "--status", "pending", "--endpoint", endpoint_id]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == delivery_id

    assert webhooks_main(["retry", "whd_unknown"]) == 2
    assert webhooks_main(["list", "--limit", "0"]) == 2


async def test_paygate_webhooks_run_delivers_on_its_own(tmp_path: Path) -> None:
    """The dispatcher as its own process (consumers with PAYGATE_WEBHOOKS_DISPATCH=false)."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'paygate.db'}"
    receiver = await WebhookReceiver().start()
    engine = create_engine(database_url)
    try:
        db = with_sealed_secrets(await Database.open(engine), DEV_VAULT_KEK)
        created = await db.webhooks.create_endpoint("acme", receiver.url, ["*"], None)
        receiver.secret = created.secret
        event = WebhookEvent("evt_2", "payment.succeeded", "pay_2", '{"type":"payment.succeeded"}')
        async with engine.begin() as conn:
            row = delivery_row(created.endpoint.id, event, datetime.now(UTC))
            await conn.execute(insert(webhook_deliveries).values(**row))
        env = {
            "PAYGATE_ENV": "development",
            "PAYGATE_DATABASE_URL": database_url,
            "PAYGATE_METRICS_PORT": "0",
        }
        process = await asyncio.to_thread(
            start_service,
            "webhooks",
            ["webhooks", "run"],
            env=env,
            log_dir=tmp_path,
            announce_prefix="PAYGATE_OPS_URL=",
        )

        async def recorded() -> bool:
            # The receiver has the request before the dispatcher records its answer.
            [delivery] = await db.webhooks.deliveries(client_id="acme")
            return delivery.status == "delivered"

        try:
            await receiver.wait_for(1)
            await eventually(recorded)
        finally:
            assert await asyncio.to_thread(process.stop) == 0, process.log()[-2000:]
        assert receiver.verified_ids() == ["evt_2"]
        [delivered] = await db.webhooks.deliveries(client_id="acme")
        assert (delivered.status, delivered.attempts) == ("delivered", 1)
    finally:
        await engine.dispose()
        await receiver.stop()
