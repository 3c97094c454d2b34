"""The facade's two hot reads straight to the driver (persistence.raw_reads) answer exactly
what the SQLAlchemy reads answer, field by field and type by type, on SQLite and
PostgreSQL; and their driver errors are judged as before: an outage is
``service_unavailable``, a bug stays a bug."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import event, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.errors import ErrorCode, PaygateError
from http_facade.database_guard import DatabaseGuard, GuardedQueries
from persistence.availability import is_database_unavailable
from persistence.engine import create_engine, single_read_engine
from persistence.migrate import create_schema
from persistence.payment_begin import order_payments_in
from persistence.payment_store import PaymentStore
from persistence.raw_reads import RawReads, raw_reads_for
from persistence.refund_store import payment_and_refunds_in
from persistence.tables import payments, refunds
from telemetry.outage_log import OutageLog
from tests.support.builders import unique

pytestmark = pytest.mark.integration

# Microseconds and a day boundary, so that a lost fraction or a shifted zone shows.
CREATED = datetime(2026, 12, 6, 23, 59, 58, 123456, tzinfo=UTC)


def payment_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": unique("pay"),
        "order_id": "order-raw",
        "client_id": "alice",
        "user_id": "user-1",
        "idempotency_key": unique("key"),
        "key_generation": 0,
        "key_expired": False,
        "parameters_hash": "h" * 64,
        "amount_minor": 12_345,
        "currency": "EUR",
        "payment_method": "card",
        "payer_type": "card",
        "payer_masked": "**** 4242",
        "payer_fingerprint": "f" * 64,
        "payee_type": "iban",
        "payee_masked": "DE** 3000",
        "payee_fingerprint": "e" * 64,
        "metadata": {"a": "b"},
        "status": "succeeded",
        "provider": "sandbox",
        "provider_reference": "ch_1",
        "created_at": CREATED,
        "updated_at": CREATED + timedelta(seconds=1),
    }
    row.update(overrides)
    return row


def refund_row(payment: dict[str, Any], at: datetime, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": unique("ref"),
        "payment_id": payment["id"],
        "order_id": payment["order_id"],
        "idempotency_key": unique("refund-key"),
        "parameters_hash": "r" * 64,
        "amount_minor": 1_000,
        "currency": "EUR",
        "reason": "requested_by_customer",
        "status": "succeeded",
        "provider": "sandbox",
        "provider_reference": "re_1",
        "created_at": at,
        "updated_at": at + timedelta(microseconds=7),
    }
    row.update(overrides)
    return row


@dataclasses.dataclass(frozen=True)
class Seeded:
    reads: RawReads
    payments: dict[str, dict[str, Any]]
    refunds: list[dict[str, Any]]

    def id_of(self, name: str) -> str:
        return str(self.payments[name]["id"])


async def seed(engine: AsyncEngine) -> Seeded:
    """Payments covering every column the views read: nulls, an error, a capture, a next
    action, a retry time, refunds (a failed one, one without amount, two pending ones at
    one instant, ordered by id), an expired key, an upstream payment (no client). Fresh
    ids each time, so that databases shared by several tests do not collide."""
    order = unique("order")
    rows = {
        "plain": payment_row(order_id=order),
        "nulls": payment_row(
            order_id=order,
            client_id=None,
            provider=None,
            provider_reference=None,
            status="processing",
        ),
        "declined": payment_row(
            order_id=order,
            status="failed",
            error_code=ErrorCode.PAYMENT_DECLINED.value,
            error_message="declined by the issuer",
            error_param="payer",
            decline_code="insufficient_funds",
            next_retry_at=CREATED + timedelta(minutes=5, microseconds=1),
            key_expired=True,
        ),
        "captured": payment_row(
            order_id=order,
            status="partially_refunded",
            captured_minor=9_000,
            refunded_minor=3_000,
            refund_reserved_minor=500,
        ),
        "action": payment_row(
            order_id=order,
            status="requires_action",
            payment_method="alipay",
            next_action_type="qr_code",
            next_action_target="https://qr.example/x",
            next_action_expires_at=CREATED + timedelta(minutes=15),
            error_message="",
        ),
    }
    captured = rows["captured"]
    same_instant = unique("ref")
    its_refunds = [
        refund_row(captured, CREATED + timedelta(seconds=2)),
        refund_row(
            captured,
            CREATED + timedelta(seconds=3),
            status="failed",
            error_code=ErrorCode.PAYMENT_DECLINED.value,
            error_message=None,
            decline_code="expired_card",
            reason=None,
        ),
        refund_row(captured, CREATED + timedelta(seconds=4), id=same_instant + "b"),
        refund_row(captured, CREATED + timedelta(seconds=4), id=same_instant + "a"),
        refund_row(
            captured,
            CREATED + timedelta(seconds=5),
            amount_minor=None,
            currency=None,
            status="failed",
            provider=None,
            provider_reference=None,
        ),
    ]
    async with engine.begin() as conn:
        # One row per statement: an executemany takes its columns from the first row only.
        for row in rows.values():
            await conn.execute(insert(payments).values(**row))
        for row in its_refunds:
            await conn.execute(insert(refunds).values(**row))
    reads = raw_reads_for(engine)
    assert reads is not None
    return Seeded(reads, rows, its_refunds)


@pytest.fixture
async def seeded(engine: AsyncEngine) -> AsyncIterator[Seeded]:
    found = await seed(engine)
    yield found
    await found.reads.close()


@pytest.fixture
async def postgres_engine(postgres_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_database_url)
    await create_schema(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'raw.db'}")
    await create_schema(engine)
    yield engine
    await engine.dispose()


def typed(value: Any) -> Any:
    """``value`` with the type of every field, recursively: ``1 == True`` and a naive
    datetime would otherwise compare equal or slip through."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (
            type(value).__name__,
            {f.name: typed(getattr(value, f.name)) for f in dataclasses.fields(value)},
        )
    if isinstance(value, list | tuple):
        return [typed(item) for item in value]
    if isinstance(value, datetime):
        return ("datetime", value.isoformat(), value.utcoffset())
    return (type(value).__name__, value)


NAMES = ["plain", "nulls", "declined", "captured", "action"]


@pytest.mark.parametrize("name", NAMES)
async def test_a_payment_with_its_refunds_is_read_as_through_sqlalchemy(seeded, engine, name):
    async with single_read_engine(engine).connect() as conn:
        expected = await payment_and_refunds_in(conn, seeded.id_of(name))
    assert expected is not None

    found = await seeded.reads.payment_with_refunds(seeded.id_of(name))

    assert typed(found) == typed(expected)


async def test_the_refunds_come_oldest_first_and_by_id_at_one_instant(seeded):
    found = await seeded.reads.payment_with_refunds(seeded.id_of("captured"))

    assert found is not None
    view, its_refunds = found
    assert view.captured_minor == 9_000
    ids = [r["id"] for r in seeded.refunds]
    assert [r.refund_id for r in its_refunds] == [ids[0], ids[1], ids[3], ids[2], ids[4]]
    assert its_refunds[0].created_at == CREATED + timedelta(seconds=2)
    assert its_refunds[4].amount is None


async def test_an_unknown_payment_is_none(seeded):
    assert await seeded.reads.payment_with_refunds("pay_" + "0" * 32) is None


@pytest.mark.parametrize("client_id", ["alice", None, "bob"])
async def test_an_orders_payments_are_read_as_through_sqlalchemy(seeded, engine, client_id):
    order = seeded.payments["plain"]["order_id"]
    async with single_read_engine(engine).connect() as conn:
        expected = await order_payments_in(conn, order, client_id)

    found = await seeded.reads.order_payments(order, client_id)

    assert typed(sorted(found, key=lambda p: p.payment_request_id)) == typed(
        sorted(expected, key=lambda p: p.payment_request_id)
    )
    assert len(found) == {"alice": 4, None: 1, "bob": 0}[client_id]
    assert await seeded.reads.order_payments("order-none", client_id) == []


async def test_the_payment_store_reads_through_the_driver(seeded, engine):
    """Nothing passes through SQLAlchemy's statement execution: the two reads are the
    driver's; their answers are the ones compared above."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    store = PaymentStore(engine)
    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        order = await store.order_payments(seeded.payments["plain"]["order_id"], "alice")
        found = await store.payment_with_refunds(seeded.id_of("captured"))
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)

    assert sent == []
    assert len(order) == 4
    assert found is not None
    assert len(found[1]) == 5


def guarded(reads: RawReads) -> GuardedQueries:
    """The facade's translation of database errors (http_facade.database_guard), with the
    composition root's judgement."""
    outages = OutageLog("database", logging.getLogger("test_raw_reads"))
    return GuardedQueries(reads, DatabaseGuard(is_database_unavailable, outages))  # type: ignore[arg-type]


async def test_a_missing_table_is_a_bug_not_an_outage(seeded, engine):
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE refunds RENAME TO refunds_gone"))

    with pytest.raises(Exception, match="refunds") as raised:
        await guarded(seeded.reads).payment_with_refunds(seeded.id_of("plain"))

    assert not isinstance(raised.value, PaygateError)
    assert not is_database_unavailable(raised.value)


async def test_a_connection_lost_mid_read_is_service_unavailable_then_reads_again(
    postgres_engine,
):
    seeded = await seed(postgres_engine)

    async def terminated(driver: Any, sql: str, params: Any) -> Any:
        # The server ends this very connection, as a restart or a failover would.
        await driver.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        raise AssertionError("the connection should be gone")

    lost = RawReads(postgres_engine, terminated)

    with pytest.raises(PaygateError) as raised:
        await guarded(lost).payment_with_refunds(seeded.id_of("plain"))

    assert raised.value.code is ErrorCode.SERVICE_UNAVAILABLE
    # The lost connection was closed, not handed out again.
    assert await seeded.reads.payment_with_refunds(seeded.id_of("plain")) is not None
    await lost.close()
    await seeded.reads.close()


async def test_the_same_reads_read_again_after_a_connection_lost_mid_read(postgres_engine):
    seeded = await seed(postgres_engine)
    kills: list[str] = []

    async def terminated_once(driver: Any, sql: str, params: Any) -> Any:
        if not kills:
            kills.append(sql)
            await driver.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return await driver.fetch(sql, *params)

    reads = RawReads(postgres_engine, terminated_once)
    try:
        with pytest.raises(PaygateError) as raised:
            await guarded(reads).payment_with_refunds(seeded.id_of("plain"))
        assert raised.value.code is ErrorCode.SERVICE_UNAVAILABLE

        found = await guarded(reads).payment_with_refunds(seeded.id_of("plain"))
    finally:
        await reads.close()
        await seeded.reads.close()
    assert found is not None
    assert found[0].payment_request_id == seeded.id_of("plain")


async def test_a_connection_that_died_while_idle_costs_no_request(postgres_engine):
    """A PostgreSQL restart or a killed backend between two reads: the pool's pre-ping
    used to replace such a connection at checkout; the reads' own connections are tried
    once more on a new one instead, so no client sees a 503 for it."""
    seeded = await seed(postgres_engine)
    try:
        # Several connections idle, each held by the reads.
        await asyncio.gather(
            *(seeded.reads.payment_with_refunds(seeded.id_of("plain")) for _ in range(4))
        )
        async with postgres_engine.connect() as conn:
            killed = await conn.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        assert killed >= 1

        for _ in range(4):
            found = await guarded(seeded.reads).payment_with_refunds(seeded.id_of("plain"))
            assert found is not None
        order = await guarded(seeded.reads).order_payments(
            seeded.payments["plain"]["order_id"], "alice"
        )
    finally:
        await seeded.reads.close()
    assert len(order) == 4


async def test_the_reads_use_no_pool_connection(seeded, engine):
    """No checkout (and so no pre-ping) and no return (no rollback) per read: the reads
    keep connections of their own, detached from the engine's pool."""
    await seeded.reads.payment_with_refunds(seeded.id_of("plain"))  # a connection made
    checkouts: list[object] = []

    def count(*_args: Any) -> None:
        checkouts.append(_args)

    event.listen(engine.sync_engine.pool, "checkout", count)
    try:
        for _ in range(3):
            assert await seeded.reads.payment_with_refunds(seeded.id_of("plain")) is not None
            order = seeded.payments["plain"]["order_id"]
            assert len(await seeded.reads.order_payments(order, "alice")) == 4
    finally:
        event.remove(engine.sync_engine.pool, "checkout", count)

    assert checkouts == []
    assert engine.sync_engine.pool.checkedout() == 0


async def test_disposing_of_the_engine_stops_the_reads_connections(sqlite_engine):
    """aiosqlite's connection thread is not a daemon: one left running would hold the
    process at exit. Disposing of the engine (all a process or a test may do) stops it."""
    reads = raw_reads_for(sqlite_engine)
    assert reads is not None
    before = set(threading.enumerate())
    await asyncio.gather(*(reads.order_payments("order-none", None) for _ in range(3)))
    started = set(threading.enumerate()) - before
    assert started

    await sqlite_engine.dispose()

    for thread in started:
        thread.join(60)  # a bound, not a measurement: it fails only if the thread never ends
    assert not any(thread.is_alive() for thread in started)
    # And the reads still work afterwards, on new connections.
    assert await reads.order_payments("order-none", None) == []
    await reads.close()


@pytest.mark.parametrize(
    ("code", "outage"),
    [(sqlite3.SQLITE_IOERR, True), (sqlite3.SQLITE_BUSY, True), (sqlite3.SQLITE_ERROR, False)],
)
async def test_sqlites_errors_are_judged_by_their_code(sqlite_engine, code, outage):
    seeded = await seed(sqlite_engine)
    order = seeded.payments["plain"]["order_id"]

    async def failing(driver: Any, sql: str, params: Any) -> Any:
        error = sqlite3.OperationalError("as SQLite raises it")
        error.sqlite_errorcode = code
        raise error

    expected: type[Exception] = PaygateError if outage else sqlite3.OperationalError
    with pytest.raises(expected) as raised:
        await guarded(RawReads(sqlite_engine, failing)).order_payments(order, "alice")

    if isinstance(raised.value, PaygateError):
        assert raised.value.code is ErrorCode.SERVICE_UNAVAILABLE
    assert len(await seeded.reads.order_payments(order, "alice")) == 4
    await seeded.reads.close()


def test_another_driver_keeps_the_sqlalchemy_reads() -> None:
    """psycopg, say: no raw reads, so PaymentStore reads through SQLAlchemy as before."""
    engine = SimpleNamespace(dialect=SimpleNamespace(driver="psycopg"))

    assert raw_reads_for(engine) is None  # type: ignore[arg-type]


async def test_a_cancelled_read_ends_its_connection_and_the_next_read_works(seeded, engine):
    """A read cancelled mid-call (a request's deadline) may leave the driver busy: that
    connection is never handed out again."""
    real = seeded.reads._fetch
    used: list[Any] = []
    started = asyncio.Event()

    async def hangs_first(driver: Any, sql: str, params: Any) -> Any:
        used.append(driver)
        if len(used) == 1:
            started.set()
            await asyncio.Event().wait()
        return await real(driver, sql, params)

    reads = RawReads(engine, hangs_first)
    try:
        first = asyncio.create_task(reads.payment_with_refunds(seeded.id_of("plain")))
        await started.wait()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first

        found = await reads.payment_with_refunds(seeded.id_of("plain"))
    finally:
        await reads.close()
    assert found is not None
    assert len(used) == 2
    assert used[1] is not used[0]
