"""The store, as the settings configure it: one line for every process that opens it."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from paygate.settings import Settings
from persistence.database import Database
from persistence.engine import create_engine, create_writer_engine
from telemetry.metrics import Metrics
from telemetry.tracing import trace_engine


class WriteLockMetrics:
    """The writer queue's :class:`persistence.group_commit.WriteLockObserver`: its lock
    times as the two ``db_write_lock_*_seconds`` histograms."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def write_lock_timed(self, dialect: str, waited_s: float, held_s: float) -> None:
        self._metrics.db_write_lock_wait_seconds.labels(dialect).observe(waited_s)
        self._metrics.db_write_lock_held_seconds.labels(dialect).observe(held_s)


def engine_for(settings: Settings) -> AsyncEngine:
    """An engine on ``PAYGATE_DATABASE_URL`` with ``PAYGATE_SQLITE_SYNCHRONOUS``.

    Every process that writes to the store opens it here, so none of them can run with
    another durability than the one configured.
    """
    engine = create_engine(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    trace_engine(engine)  # a no-op unless this process traces
    return engine


async def open_database(settings: Settings, metrics: Metrics | None = None) -> Database:
    """The database of the settings, its schema upgraded; close it when done. With
    ``metrics``, its writer queue's lock times are observed in them.

    On SQLite with ``PAYGATE_SQLITE_WRITE_LOCK_POLL_MS`` above 0, its writer queue has an
    engine of its own (persistence.engine.create_writer_engine).
    """
    engine = engine_for(settings)
    writer = create_writer_engine(
        settings.database_url,
        sqlite_synchronous=settings.sqlite_synchronous,
        lock_poll_ms=settings.sqlite_write_lock_poll_ms,
    )
    if writer is not None:
        trace_engine(writer)
    try:
        return await Database.open(
            engine,
            claim_lease=timedelta(seconds=settings.claim_lease_s),
            writer_engine=writer,
            lock_observer=None if metrics is None else WriteLockMetrics(metrics),
        )
    except BaseException:
        if writer is not None:
            await writer.dispose()
        raise
