"""Schema migrations on SQLite and PostgreSQL: the revisions, old databases, concurrent starts."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, String, Table, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.status import PaymentStatus
from paygate.db_command import EXIT_BEHIND, EXIT_OK
from paygate.db_command import main as db_main
from persistence.engine import create_engine
from persistence.migrate import (
    BASELINE_REVISION,
    UnrecognisedSchemaError,
    alembic_config,
    create_schema,
    current_revision,
    head_metadata,
    head_revision,
)
from persistence.migrations import baseline_tables
from persistence.payment_store import PaymentStore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def differences(engine: AsyncEngine, tables: MetaData) -> list:
    """Everything autogenerate would change to make the database match ``tables``."""

    def compare(connection):
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, tables)

    async with engine.connect() as conn:
        return await conn.run_sync(compare)


async def upgrade_to(engine: AsyncEngine, revision: str) -> None:
    def upgrade(connection):
        with connection.begin():
            command.upgrade(alembic_config(connection), revision)

    async with engine.connect() as conn:
        await conn.run_sync(upgrade)


async def create_all_as_before_migrations(engine: AsyncEngine) -> None:
    """What every process of release 87d65ed did at start."""
    async with engine.begin() as conn:
        await conn.run_sync(baseline_tables.metadata.create_all)


@pytest.fixture
async def fresh_engine(database_url: str):
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def test_the_revisions_make_exactly_the_tables_of_the_code(fresh_engine) -> None:
    # A table or column changed in persistence/ without a revision fails here: the list
    # says what the missing revision has to do.
    await create_schema(fresh_engine)
    assert await current_revision(fresh_engine) == head_revision()
    assert await differences(fresh_engine, head_metadata()) == []


async def test_the_baseline_revision_is_the_schema_of_the_last_create_all_release(
    fresh_engine,
) -> None:
    await upgrade_to(fresh_engine, BASELINE_REVISION)
    assert await differences(fresh_engine, baseline_tables.metadata) == []


async def test_a_database_made_before_migrations_is_stamped_and_upgraded(fresh_engine) -> None:
    await create_all_as_before_migrations(fresh_engine)
    payment_id = str(uuid.uuid4())
    async with fresh_engine.begin() as conn:
        await conn.execute(insert(baseline_tables.payments).values(**_old_payment(payment_id)))
        # A row referring to the payment: SQLite's rebuild of payments must keep it valid.
        await conn.execute(
            insert(baseline_tables.provider_attempts).values(
                attempt_key=f"{payment_id}:1",
                payment_id=payment_id,
                attempt_no=1,
                provider="sandbox",
                status="succeeded",
                created_at=T0,
                finished_at=T0,
            )
        )

    await create_schema(fresh_engine)

    assert await current_revision(fresh_engine) == head_revision()
    assert await differences(fresh_engine, head_metadata()) == []
    view = await PaymentStore(fresh_engine).get_payment(payment_id)
    assert view is not None
    assert view.status is PaymentStatus.SUCCEEDED
    assert view.amount.minor_units == 1050
    assert view.client_id is None
    assert view.refunded_minor == 0
    assert view.refund_reserved_minor == 0
    assert view.refundable_minor == 1050


async def test_a_database_already_at_the_current_tables_is_stamped_at_head(
    fresh_engine,
) -> None:
    # What create_all made with the tables of this release, before it had migrations.
    async with fresh_engine.begin() as conn:
        await conn.run_sync(head_metadata().create_all)
    await create_schema(fresh_engine)
    assert await current_revision(fresh_engine) == head_revision()


async def test_unversioned_tables_of_another_shape_are_refused(fresh_engine) -> None:
    other = MetaData()
    Table("payments", other, Column("id", Integer, primary_key=True), Column("x", String(5)))
    async with fresh_engine.begin() as conn:
        await conn.run_sync(other.create_all)
    with pytest.raises(UnrecognisedSchemaError, match="match no known schema"):
        await create_schema(fresh_engine, attempts=1)
    assert await current_revision(fresh_engine) is None


async def test_concurrent_starts_on_a_fresh_database_all_succeed(database_url: str) -> None:
    # One engine per simulated process; attempts=1 so only the lock, not a retry, can
    # make them all succeed.
    engines = [create_engine(database_url) for _ in range(4)]
    try:
        await asyncio.gather(*(create_schema(engine, attempts=1) for engine in engines))
        assert await current_revision(engines[0]) == head_revision()
        assert await differences(engines[0], head_metadata()) == []
    finally:
        for engine in engines:
            await engine.dispose()


async def test_concurrent_starts_on_a_database_made_before_migrations(
    database_url: str,
) -> None:
    engines = [create_engine(database_url) for _ in range(3)]
    try:
        await create_all_as_before_migrations(engines[0])
        await asyncio.gather(*(create_schema(engine, attempts=1) for engine in engines))
        assert await current_revision(engines[0]) == head_revision()
    finally:
        for engine in engines:
            await engine.dispose()


def test_paygate_db_current_and_upgrade(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PAYGATE_DATABASE_URL", database_url)

    assert db_main(["current"]) == EXIT_BEHIND
    assert json.loads(capsys.readouterr().out) == {
        "current": None,
        "head": head_revision(),
        "upToDate": False,
    }
    assert db_main(["upgrade"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == {"from": None, "to": head_revision()}
    assert db_main(["current"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["upToDate"] is True


def _old_payment(payment_id: str) -> dict[str, object]:
    return {
        "id": payment_id,
        "order_id": "order-1",
        "user_id": "user-1",
        "idempotency_key": "key-1",
        "key_generation": 0,
        "key_expired": False,
        "parameters_hash": "0" * 64,
        "amount_minor": 1050,
        "currency": "EUR",
        "payment_method": "card",
        "payer_type": "card",
        "payer_masked": "****4242",
        "payer_fingerprint": "a" * 64,
        "payee_type": "iban",
        "payee_masked": "****3000",
        "payee_fingerprint": "b" * 64,
        "metadata": {"cart": "42"},
        "status": "succeeded",
        "provider": "sandbox",
        "provider_reference": "ch_1",
        "created_at": T0,
        "updated_at": T0,
    }
