"""The facade's two hot reads, sent straight to the database driver.

Every create-and-wait reads the order's payments before publishing and the payment with
its refunds after the wait. Through SQLAlchemy's async adapters each statement costs
several trips to the driver (on aiosqlite, one to its thread and back for the cursor, the
execute, the fetch and the cursor's close) and Python work per trip; profiled, that was
the largest share of the facade's CPU. Here each read is one driver call on a connection
kept for these reads outside the engine's pool (:mod:`persistence.driver_connections`, no
checkout, ping or rollback per read): aiosqlite's ``execute_fetchall`` (one trip to its
thread) or asyncpg's ``fetch`` (its prepared-statement cache makes it one round trip).

Invariants:

* **The same rows as through SQLAlchemy.** The SQL is the SQLAlchemy statement compiled
  once for the engine's dialect, and every value goes through the column type's own
  result processor for that dialect (SQLite's datetime text and 0/1 booleans are parsed
  exactly as SQLAlchemy parses them), then through the same row-to-view functions as the
  SQLAlchemy path (``payment_view_of``, ``payment_and_refunds_of``).
* **One statement, one snapshot, no transaction.** Nothing is sent but the ``SELECT``:
  SQLite runs it in an implicit transaction of its own (the pool's connections run in
  autocommit mode), PostgreSQL under its statement snapshot; so the payment and its
  refunds agree, as in :func:`persistence.refund_store.payment_and_refunds_in`.
* **Errors as before.** Opening a connection is SQLAlchemy's (its errors unchanged); the
  driver's own errors (``sqlite3.Error``, asyncpg's) reach the caller unwrapped, and
  :func:`persistence.availability.is_database_unavailable` already judges those, so an
  outage still answers ``service_unavailable``. A connection whose driver call failed
  as an outage is closed, never handed out again (see
  :mod:`persistence.driver_connections`, which also retries once a read whose idle
  connection had died, as the pool's pre-ping did).

Only for ``sqlite+aiosqlite`` and ``postgresql+asyncpg``; :func:`raw_reads_for` returns
None for any other driver, and the caller keeps the SQLAlchemy path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Select

from domain.idempotency import OrderPayment
from domain.payment_view import PaymentView
from domain.refund_view import RefundView
from domain.status import PaymentStatus
from persistence.driver_connections import DriverConnections
from persistence.payment_begin import ORDER_PAYMENT_COLUMNS
from persistence.refund_store import PAYMENT_AND_REFUNDS, payment_and_refunds_of
from persistence.tables import payments

# The order's payments by order id alone, as ``payments_of_orders`` reads them (the client
# is matched in Python, as there), with one bound value instead of an expanding list.
_ORDER_PAYMENTS: Final = select(*ORDER_PAYMENT_COLUMNS).where(
    payments.c.order_id == bindparam("order_id")
)

# Runs the SQL with positional parameters on a driver connection; the rows as tuples.
_Fetch = Callable[[Any, str, Sequence[Any]], Awaitable[Sequence[Sequence[Any]]]]


async def _aiosqlite_fetch(driver: Any, sql: str, params: Sequence[Any]) -> Sequence[Any]:
    return list(await driver.execute_fetchall(sql, tuple(params)))


async def _asyncpg_fetch(driver: Any, sql: str, params: Sequence[Any]) -> Sequence[Any]:
    return list(await driver.fetch(sql, *params))


_FETCHES: Final[Mapping[str, _Fetch]] = {"aiosqlite": _aiosqlite_fetch, "asyncpg": _asyncpg_fetch}


class _Compiled:
    """A statement compiled once for a dialect: its SQL, the order of its parameters, and
    per column its name and SQLAlchemy's result processor (None: the value as it comes)."""

    def __init__(self, statement: Select[Any], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self.parameters = tuple(compiled.positiontup or ())
        columns = list(statement.selected_columns)
        self.names = tuple(str(column.key) for column in columns)
        self.processors = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        )

    def rows(self, raw: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        processed = []
        for values in raw:
            processed.append(
                {
                    name: value if process is None or value is None else process(value)
                    for name, process, value in zip(
                        self.names, self.processors, values, strict=True
                    )
                }
            )
        return processed


class RawReads:
    """The two hot reads, one driver call each (see the module's docstring)."""

    def __init__(self, engine: AsyncEngine, fetch: _Fetch) -> None:
        self._connections = DriverConnections(engine)
        self._fetch = fetch
        self._payment_and_refunds = _Compiled(PAYMENT_AND_REFUNDS, engine.dialect)
        self._order_payments = _Compiled(_ORDER_PAYMENTS, engine.dialect)

    async def payment_with_refunds(
        self, payment_id: str
    ) -> tuple[PaymentView, list[RefundView]] | None:
        """The payment and its refunds (oldest first), read in one statement."""
        rows = await self._read(self._payment_and_refunds, {"payment_id": payment_id})
        return payment_and_refunds_of(rows)

    async def order_payments(self, order_id: str, client_id: str | None) -> list[OrderPayment]:
        """The payments of ``client_id``'s order ``order_id`` (None: upstream services')."""
        rows = await self._read(self._order_payments, {"order_id": order_id})
        return [
            OrderPayment(
                row["id"], row["idempotency_key"], PaymentStatus(row["status"]), row["key_expired"]
            )
            for row in rows
            if row["client_id"] == client_id
        ]

    async def _read(self, statement: _Compiled, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        params = [values[name] for name in statement.parameters]

        async def fetch(driver: Any) -> Sequence[Sequence[Any]]:
            return await self._fetch(driver, statement.sql, params)

        return statement.rows(await self._connections.run(fetch))

    async def close(self) -> None:
        """Close the reads' own connections. Safe to call twice."""
        await self._connections.close()


def raw_reads_for(engine: AsyncEngine) -> RawReads | None:
    """Raw reads on connections made by ``engine``, or None when its driver is neither
    aiosqlite nor asyncpg (the caller then reads through SQLAlchemy)."""
    fetch = _FETCHES.get(engine.dialect.driver)
    return None if fetch is None else RawReads(engine, fetch)
