"""A database that refuses writes is an outage, not one bad payment, on SQLite and PostgreSQL.

The attack: PostgreSQL fails over and paygate's connections land on a hot standby (or an
operator sets ``default_transaction_read_only``): every write answers SQLSTATE 25006,
``read_only_sql_transaction``. consumer.failures did not count class 25 as transient, so the
error read as "one payment's bug": the reconciler's per-payment guard caught it for every
in-doubt payment of the page (each claim is a write), logged each as "not reconciled" and
counted it ``failed``, hiding the outage; and the consumer would dead-letter good commands
after its bounded retries (UNKNOWN, not TRANSIENT). SQLite's read-only error was an
OperationalError, an outage already; PostgreSQL's must read the same.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from consumer.failures import FailureKind, classify, outage_of
from consumer.outcome import Outcome
from consumer.payment_reconciler import PaymentReconciler
from persistence.engine import create_engine
from persistence.payment_store import PaymentStore
from telemetry.metrics import Metrics
from tests.support.builders import create_payment
from tests.support.clock import Clock
from tests.support.faulty_acquirer import Acquirer, one_call_handler

pytestmark = pytest.mark.integration


def _read_only_engine(engine: AsyncEngine) -> AsyncEngine:
    """Another engine on the same database whose every connection refuses writes, as a
    standby's would."""
    url = engine.url.render_as_string(hide_password=False)
    if engine.dialect.name == "postgresql":
        # A session default, set at connect: a SET would be undone by the pool's rollback.
        settings = {"default_transaction_read_only": "on"}
        return create_async_engine(url, connect_args={"server_settings": settings})
    read_only = create_engine(url)

    def refuse_writes(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA query_only = ON")  # not transactional: it stays
        cursor.close()

    event.listen(read_only.sync_engine, "connect", refuse_writes)
    return read_only


async def test_a_read_only_database_ends_the_reconciliation_pass_as_an_outage(engine):
    clock = Clock()
    acquirer = Acquirer()
    first, second = create_payment(), create_payment()
    acquirer.timeout_once |= {f"{first.payment_request_id}-a1", f"{second.payment_request_id}-a1"}
    handler = one_call_handler(PaymentStore(engine, clock), acquirer, clock)
    assert await handler.handle(first) is Outcome.PENDING
    assert await handler.handle(second) is Outcome.PENDING
    clock.now += timedelta(seconds=1)

    read_only = _read_only_engine(engine)
    try:
        store = PaymentStore(read_only, clock)
        reconciler = PaymentReconciler(
            store=store,
            handler=one_call_handler(store, acquirer, clock),
            metrics=Metrics(),
            min_age=timedelta(0),
            sweep=None,
            clock=clock,
        )
        with pytest.raises(DBAPIError) as raised:
            # Before: returned, with both payments counted "failed" and the outage unnamed.
            await reconciler.run_once()
    finally:
        await read_only.dispose()

    # The consumer reads the same verdict: retried without limit, never dead-lettered.
    assert classify(raised.value).kind is FailureKind.TRANSIENT
    assert outage_of(raised.value) == "database"
    # Nothing was charged again while the database refused to record it.
    assert set(acquirer.charges) == set()
