"""The order read before publishing and the payment-with-refunds read after the wait run
one SELECT each and, on SQLite, no BEGIN; the option that drops the BEGIN stays on its own
connections and never reaches the pool's others. (Their results, with refunds, on SQLite
and PostgreSQL: tests/integration/test_refund_store.py.) The store sends the same two reads
straight to the driver where it can (tests/integration/test_raw_reads.py); these tests
are of the SQLAlchemy reads it falls back on, and compares with."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from consumer.outcome import Outcome
from domain.status import PaymentStatus
from persistence.engine import create_engine, single_read_engine, write_transaction
from persistence.migrate import create_schema
from persistence.payment_begin import order_payments_in
from persistence.payment_store import PaymentStore
from persistence.refund_store import payment_and_refunds_in
from tests.support.builders import create_payment
from tests.support.sandbox_handler import sandbox_payment_handler

pytestmark = pytest.mark.integration


@pytest.fixture
async def handler(engine):
    async with sandbox_payment_handler(engine) as handler:
        yield handler


@pytest.fixture
async def sqlite_engine(tmp_path: Path):
    """A SQLite store of its own: the BEGIN is SQLite's (persistence.engine._sqlite_begin)."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'single.db'}")
    await create_schema(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def statements(sqlite_engine):
    """The first word of every SQL statement the engine's connections send, in order."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement.strip().split()[0].upper())

    event.listen(sqlite_engine.sync_engine, "before_cursor_execute", record)
    yield sent
    event.remove(sqlite_engine.sync_engine, "before_cursor_execute", record)


async def test_the_order_read_finds_the_orders_payments(handler, engine):
    first = dataclasses.replace(
        create_payment(order_id="order-single", idempotency_key="k-1"), client_id="alice"
    )
    other_client = dataclasses.replace(first, client_id="bob")
    assert await handler.handle(first) is Outcome.SUCCEEDED
    assert await handler.handle(other_client) is Outcome.SUCCEEDED
    store = PaymentStore(engine)

    order = await store.order_payments("order-single", "alice")

    assert [(p.payment_request_id, p.status) for p in order] == [
        (first.payment_request_id, PaymentStatus.SUCCEEDED)
    ]
    assert await store.order_payments("order-none", "alice") == []


async def test_the_order_read_sends_one_select_and_no_begin_on_sqlite(sqlite_engine, statements):
    async with single_read_engine(sqlite_engine).connect() as conn:
        await order_payments_in(conn, "order-x", "alice")

    assert statements == ["SELECT"]


async def test_the_payment_with_its_refunds_is_one_select_and_no_begin_on_sqlite(
    sqlite_engine, statements
):
    async with single_read_engine(sqlite_engine).connect() as conn:
        assert await payment_and_refunds_in(conn, "pay_" + "0" * 32) is None

    assert statements == ["SELECT"]


async def test_other_connections_of_the_pool_still_begin(sqlite_engine, statements):
    # The pool hands back its most recent connection first: the one the order read used.
    async with single_read_engine(sqlite_engine).connect() as conn:
        await order_payments_in(conn, "order-x", "alice")
    statements.clear()

    async with sqlite_engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        await conn.execute(text("SELECT 2"))
    async with write_transaction(sqlite_engine) as conn:
        await conn.execute(text("SELECT 3"))

    assert statements == ["BEGIN", "SELECT", "SELECT", "BEGIN", "SELECT"]
