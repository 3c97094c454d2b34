"""Webhook signing secrets at rest, on SQLite and PostgreSQL: sealed under the vault's data
keys at creation and by the start after revision 0017, opened only to sign, rotated with
the vault's keys, and never lost by a downgrade (persistence.webhook_secrets)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.errors import ErrorCode, PaygateError
from domain.webhook_events import WebhookEvent
from paygate.keys_command import main as keys_main
from persistence.database import Database
from persistence.engine import create_engine
from persistence.migrate import alembic_config, create_schema, current_revision, head_revision
from persistence.webhook_fanout import delivery_row
from persistence.webhook_store import new_secret
from persistence.webhook_tables import webhook_deliveries, webhook_endpoints
from producer.webhook_dispatcher import CANNOT_SIGN, WebhookDispatcher
from producer.webhook_sender import WebhookSender
from telemetry.metrics import Metrics
from tests.support.facade_world import KEY_1, World, world_client
from tests.support.vault_keys import KEK_1, KEK_1_WRONG, KEK_2, keys_made_earlier
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.webhook_vault import vault_of, with_sealed_secrets

pytestmark = pytest.mark.integration

CLIENT = "acme"
# The revision 0017 follows (whatever revisions are chained before it).
BEFORE_0017 = str(ScriptDirectory.from_config(alembic_config()).get_revision("0017").down_revision)


async def raw_endpoints(engine: AsyncEngine) -> list[str]:
    """Every endpoint row as the database prints it (bytea as hex on PostgreSQL)."""
    cast = "t::text" if engine.dialect.name == "postgresql" else "*"
    async with engine.connect() as conn:
        rows = await conn.execute(text(f"SELECT {cast} FROM webhook_endpoints AS t"))  # noqa: S608
        return [" ".join(str(v) for v in row) for row in rows]


def secret_forms(secret: str) -> list[str]:
    """The ways a secret could show in a printed row: as given, its key bytes in hex."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    return [secret, secret.removeprefix("whsec_"), key.hex()]


def assert_not_in_rows(secret: str, rows: list[str]) -> None:
    printed = "\n".join(rows)
    for form in secret_forms(secret):
        assert form not in printed


async def queue_event(engine: AsyncEngine, endpoint_id: str, event_id: str) -> None:
    event = WebhookEvent(event_id, "payment.succeeded", "pay_1", '{"type":"payment.succeeded"}')
    async with engine.begin() as conn:
        await conn.execute(
            webhook_deliveries.insert().values(
                **delivery_row(endpoint_id, event, datetime.now(UTC) - timedelta(seconds=1))
            )
        )


async def deliver(db: Database, sender: WebhookSender, metrics: Metrics | None = None) -> int:
    dispatcher = WebhookDispatcher(db.webhooks, sender, metrics or Metrics())
    return await dispatcher.dispatch_once()


async def test_a_new_endpoints_secret_is_stored_sealed_and_signs_verifiably(
    engine: AsyncEngine, receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    db = with_sealed_secrets(Database(engine))
    created = await db.webhooks.create_endpoint(CLIENT, receiver.url, ["*"], None)
    receiver.secret = created.secret

    async with engine.connect() as conn:
        row = (await conn.execute(select(webhook_endpoints))).one()
    assert row.secret is None
    assert row.secret_key_id == await vault_of(db).newest_key_id()
    assert_not_in_rows(created.secret, await raw_endpoints(engine))

    await queue_event(engine, created.endpoint.id, "evt_new")
    assert await deliver(db, sender) == 1
    [received] = receiver.received  # the receiver verified its signature with the secret
    assert received.webhook_id == "evt_new"


async def test_the_rest_answer_shows_the_secret_at_creation_only(engine: AsyncEngine) -> None:
    db = with_sealed_secrets(Database(engine))
    world = World()
    world.dns["hooks.shop.example"] = ["93.184.215.14"]
    client = await world_client(world, webhooks=db.webhooks)
    auth = {"Authorization": f"Bearer {KEY_1}"}
    try:
        body = {"url": "https://hooks.shop.example/in", "enabledEvents": ["*"]}
        created = await client.post("/v1/webhook_endpoints", json=body, headers=auth)
        assert created.status == 201
        answer = await created.json()
        secret = answer["secret"]
        assert secret.startswith("whsec_")
        path = f"/v1/webhook_endpoints/{answer['id']}"
        for method, url in (
            ("GET", "/v1/webhook_endpoints"),
            ("GET", path),
            ("GET", f"{path}/deliveries"),
            ("DELETE", path),
        ):
            later = await client.request(method, url, headers=auth)
            assert later.status == 200
            assert "secret" not in await later.text()
    finally:
        await client.close()
    assert_not_in_rows(secret, await raw_endpoints(engine))


async def test_clear_secrets_from_before_0017_are_sealed_and_still_sign(
    database_url: str, receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_to(engine, BEFORE_0017)
        secret = new_secret()
        receiver.secret = secret
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO webhook_endpoints (id, client_id, url, enabled_events, secret, "
                    "created_at) VALUES ('we_old', :client, :url, '[\"*\"]', :secret, :at)"
                ),
                {"client": CLIENT, "url": receiver.url, "secret": secret, "at": datetime.now(UTC)},
            )
        await create_schema(engine)
        assert await current_revision(engine) == head_revision()
        db = with_sealed_secrets(Database(engine))
        # What the facade, the consumer and `paygate webhooks run` do at start; a second
        # start finds nothing left to seal.
        assert await db.webhooks.secrets.seal_clear() == 1
        assert await db.webhooks.secrets.seal_clear() == 0
        async with engine.connect() as conn:
            row = (await conn.execute(select(webhook_endpoints))).one()
        assert row.secret is None
        assert row.secret_ciphertext is not None
        assert_not_in_rows(secret, await raw_endpoints(engine))

        await queue_event(engine, "we_old", "evt_old")
        assert await deliver(db, sender) == 1
        assert [r.webhook_id for r in receiver.received] == ["evt_old"]
    finally:
        await engine.dispose()


async def test_a_downgrade_refuses_to_lose_sealed_secrets_until_they_are_unsealed(
    engine: AsyncEngine,
) -> None:
    db = with_sealed_secrets(Database(engine))
    created = await db.webhooks.create_endpoint(CLIENT, "https://hooks.example/in", ["*"], None)
    # Alembic loads the revision as a module of its own: its error class is not importable.
    with pytest.raises(RuntimeError, match="unseal-webhook-secrets"):
        await downgrade_to(engine, BEFORE_0017)
    assert await current_revision(engine) == head_revision()
    assert await db.webhooks.secrets.unseal_all() == (1, 0)
    await downgrade_to(engine, BEFORE_0017)
    async with engine.connect() as conn:
        stored = await conn.scalar(text("SELECT secret FROM webhook_endpoints"))
    assert stored == created.secret


async def test_a_deleted_endpoint_keeps_no_secret_and_its_deliveries_stay(
    engine: AsyncEngine,
) -> None:
    db = with_sealed_secrets(Database(engine))
    created = await db.webhooks.create_endpoint(CLIENT, "https://hooks.example/in", ["*"], None)
    await queue_event(engine, created.endpoint.id, "evt_kept")
    key_id = await vault_of(db).newest_key_id()
    assert await db.webhooks.secrets.count_under(key_id) == 1

    assert await db.webhooks.delete_endpoint(CLIENT, created.endpoint.id)
    async with engine.connect() as conn:
        row = (await conn.execute(select(webhook_endpoints))).one()
    assert (row.id, row.secret, row.secret_key_id, row.secret_ciphertext) == (
        created.endpoint.id,
        None,
        None,
        None,
    )
    assert row.deleted_at is not None
    # The deliveries' history stays, with the row it refers to.
    [delivery] = await db.webhooks.deliveries(client_id=CLIENT)
    assert (delivery.event_id, delivery.status) == ("evt_kept", "failed")
    # Nothing holds the data key for it any more: the key can be retired.
    assert await db.webhooks.secrets.count_under(key_id) == 0


async def test_secrets_an_earlier_release_kept_on_deleted_endpoints_are_erased_at_start(
    engine: AsyncEngine,
) -> None:
    db = with_sealed_secrets(Database(engine))
    live = await db.webhooks.create_endpoint(CLIENT, "https://hooks.example/a", ["*"], None)
    gone = await db.webhooks.create_endpoint(CLIENT, "https://hooks.example/b", ["*"], None)
    # Deleted as a release before this one did: deleted_at only, the secret kept (sealed,
    # or still clear from before revision 0017).
    cleared = await db.webhooks.create_endpoint(CLIENT, "https://hooks.example/c", ["*"], None)
    async with engine.begin() as conn:
        e = webhook_endpoints
        await conn.execute(
            e.update()
            .where(e.c.id.in_([gone.endpoint.id, cleared.endpoint.id]))
            .values(deleted_at=datetime.now(UTC))
        )
        await conn.execute(
            e.update()
            .where(e.c.id == cleared.endpoint.id)
            .values(secret=cleared.secret, secret_key_id=None, secret_ciphertext=None)
        )
    # What every process that opens the vault runs at start: erased, not sealed.
    assert await db.webhooks.secrets.seal_clear() == 0
    assert await db.webhooks.secrets.erase_deleted() == 0
    async with engine.connect() as conn:
        rows = {
            row.id: (row.secret, row.secret_key_id, row.secret_ciphertext)
            for row in await conn.execute(select(webhook_endpoints))
        }
    assert rows[gone.endpoint.id] == rows[cleared.endpoint.id] == (None, None, None)
    assert rows[live.endpoint.id][1] is not None  # a live endpoint's secret is untouched
    for secret in (gone.secret, cleared.secret):
        assert_not_in_rows(secret, await raw_endpoints(engine))


async def test_a_downgrade_gives_an_erased_deleted_endpoint_an_unknown_secret(
    engine: AsyncEngine,
) -> None:
    db = with_sealed_secrets(Database(engine))
    created = await db.webhooks.create_endpoint(CLIENT, "https://hooks.example/in", ["*"], None)
    assert await db.webhooks.delete_endpoint(CLIENT, created.endpoint.id)
    # Nothing sealed is left to lose: the downgrade goes through, and the column a release
    # before 0017 requires holds a secret nobody was ever shown.
    await downgrade_to(engine, BEFORE_0017)
    async with engine.connect() as conn:
        stored = await conn.scalar(text("SELECT secret FROM webhook_endpoints"))
    assert stored is not None
    assert stored.startswith("whsec_")
    assert stored != created.secret


async def test_rewrap_moves_secrets_to_the_newest_key_and_retire_waits_for_it(
    engine: AsyncEngine, receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    db = with_sealed_secrets(Database(engine))
    vault = vault_of(db)
    created = await db.webhooks.create_endpoint(CLIENT, receiver.url, ["*"], None)
    receiver.secret = created.secret
    first = await vault.newest_key_id()
    second = (await vault.rotate()).key_id
    secrets = db.webhooks.secrets
    assert await secrets.count_under(first) == 1

    report = await secrets.rewrap()
    assert (report.sealed, report.moved, report.failed) == (0, 1, 0)
    assert await secrets.count_under(first) == 0
    assert await secrets.count_under(second) == 1
    await vault.retire(first)  # nothing of the vault's own was under it
    assert_not_in_rows(created.secret, await raw_endpoints(engine))

    await queue_event(engine, created.endpoint.id, "evt_rotated")
    assert await deliver(db, sender) == 1
    assert [r.webhook_id for r in receiver.received] == ["evt_rotated"]


async def test_a_retired_or_wrong_key_fails_the_attempt_clearly_and_never_shows_the_secret(
    engine: AsyncEngine,
    receiver: WebhookReceiver,
    sender: WebhookSender,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = with_sealed_secrets(Database(engine))
    created = await db.webhooks.create_endpoint(CLIENT, receiver.url, ["*"], None)
    receiver.secret = created.secret
    await queue_event(engine, created.endpoint.id, "evt_lost")
    [due] = await db.webhooks.claim_due(1, per_endpoint=1, in_flight={}, lease=timedelta(0))

    # The key-encryption key swapped under the same id: the data key does not unwrap.
    wrong = Database(engine).webhooks.with_secrets(vault_of(db, KEK_1_WRONG))
    with pytest.raises(PaygateError) as caught:
        await wrong.secret_of(due)
    assert caught.value.code is ErrorCode.ENCRYPTION_KEY_MISMATCH
    # The ciphertext moved to another endpoint's row: it is bound to its own.
    with pytest.raises(PaygateError) as caught:
        await db.webhooks.secrets.open("we_other", due.secret)
    assert caught.value.code is ErrorCode.ACCOUNT_DATA_TAMPERED
    assert "webhook signing secret" in caught.value.message

    # Its data key retired behind rewrap's back (the key's bytes erased).
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE vault_keys SET wrapped_key = NULL"))
    metrics = Metrics()
    fresh = with_sealed_secrets(Database(engine))  # a process started since: no cached key
    with caplog.at_level(logging.INFO):
        assert await deliver(fresh, sender, metrics) == 1  # the claim above had no lease
    assert receiver.received == []
    [delivery] = await fresh.webhooks.deliveries(client_id=CLIENT)
    assert delivery.status == "pending"  # tried again, while an operator restores the key
    # What the client reads names no key; the operator's log does.
    assert delivery.last_error == CANNOT_SIGN
    assert metrics.webhook_attempts.labels("secret_unavailable")._value.get() == 1
    logged = " ".join(str(record.__dict__) for record in caplog.records)
    for form in secret_forms(created.secret):
        assert form not in logged
    assert "encryption_key_unknown" in logged
    assert due.secret.key_id is not None
    assert due.secret.key_id in logged


def test_paygate_keys_rewrap_covers_webhook_secrets_and_retire_waits_for_them(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PAYGATE_ENV", "development")
    monkeypatch.setenv("PAYGATE_DATABASE_URL", database_url)
    monkeypatch.setenv("PAYGATE_VAULT_KEK", KEK_1)

    async def create() -> str:
        engine = create_engine(database_url)
        try:
            db = with_sealed_secrets(await Database.open(engine))
            created = await db.webhooks.create_endpoint(CLIENT, "https://h.example/", ["*"], None)
            return created.secret
        finally:
            await engine.dispose()

    assert keys_main(["rotate"]) == 0
    first = json.loads(capsys.readouterr().out)["keyId"]
    secret = asyncio.run(create())
    assert keys_main(["rotate"]) == 0
    capsys.readouterr()
    assert keys_main(["retire", first]) == 1
    assert "webhook signing secret(s) are still encrypted under" in capsys.readouterr().err
    monkeypatch.setenv("PAYGATE_VAULT_KEK", f"{KEK_2},{KEK_1}")
    assert keys_main(["rewrap"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["webhookSecretsMoved"], report["webhookSecretsFailed"]) == (1, 0)
    # Retired only once no process can still encrypt under it (a minute after its successor).
    keys_made_earlier(database_url, timedelta(minutes=2))
    assert keys_main(["retire", first]) == 0
    capsys.readouterr()
    assert keys_main(["list"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(k["keyId"] == first, k["webhookSecrets"]) for k in listed] == [(True, 0), (False, 1)]
    # For a downgrade: back in clear, under its own secret.
    monkeypatch.setenv("PAYGATE_VAULT_KEK", KEK_2)
    assert keys_main(["unseal-webhook-secrets"]) == 0
    assert json.loads(capsys.readouterr().out) == {"webhookSecretsUnsealed": 1, "failed": 0}

    async def stored() -> str | None:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                value: str | None = await conn.scalar(select(webhook_endpoints.c.secret))
                return value
        finally:
            await engine.dispose()

    assert asyncio.run(stored()) == secret


async def upgrade_to(engine: AsyncEngine, revision: str) -> None:
    def upgrade(connection):
        with connection.begin():
            command.upgrade(alembic_config(connection), revision)

    async with engine.connect() as conn:
        await conn.run_sync(upgrade)


async def downgrade_to(engine: AsyncEngine, revision: str) -> None:
    def downgrade(connection):
        with connection.begin():
            command.downgrade(alembic_config(connection), revision)

    async with engine.connect() as conn:
        await conn.run_sync(downgrade)
