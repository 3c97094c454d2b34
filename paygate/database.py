"""The store's engine, as the settings configure it."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from paygate.settings import Settings
from persistence.engine import create_engine


def engine_for(settings: Settings) -> AsyncEngine:
    """An engine on ``PAYGATE_DATABASE_URL`` with ``PAYGATE_SQLITE_SYNCHRONOUS``.

    Every process that writes to the store opens it here, so none of them can run with
    another durability than the one configured.
    """
    return create_engine(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
