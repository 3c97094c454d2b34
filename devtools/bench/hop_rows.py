"""The store's marks of the hops: each payment's ``created_at`` and ``updated_at``.

One read-only query on the payments table, through SQLAlchemy, so it reads SQLite and
PostgreSQL alike. Only the columns every schema version has are named, so a baseline
checkout's store reads the same way. The stack's store holds this run's payments only.
A PostgreSQL stack's database is dropped when the stack stops: read it before.

Stored timestamps are microseconds of the consumer's clock (the machine's, as the
client's and the producers'); SQLite hands them back naive, and they are UTC.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from persistence.engine import as_utc
from persistence.tables import payments


async def payment_times(database_url: str) -> dict[str, tuple[float, float]]:
    """Per order id, the payment's (created_at, updated_at) in epoch seconds."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                select(payments.c.order_id, payments.c.created_at, payments.c.updated_at)
            )
            rows = result.all()
            await conn.rollback()  # it only read
    finally:
        await engine.dispose()
    return {
        str(order_id): (as_utc(created_at).timestamp(), as_utc(updated_at).timestamp())
        for order_id, created_at, updated_at in rows
    }
