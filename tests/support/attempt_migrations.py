"""What the migration tests of ``provider_attempts`` (revisions 0018 and 0019) read around a
step: moving the schema down or up on the test's own engine, the table's columns, and the
stray sweep's partial index as the database defines it (a table rebuilt by SQLite's batch
mode must not lose the index's ``WHERE``)."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.migrate import alembic_config


async def migrate(engine: AsyncEngine, step: str, revision: str) -> None:
    """Runs alembic's ``step`` ("upgrade" or "downgrade") to ``revision`` in one transaction."""

    def run(connection: Connection) -> None:
        with connection.begin():
            getattr(command, step)(alembic_config(connection), revision)

    async with engine.connect() as conn:
        await conn.run_sync(run)


async def attempt_columns(engine: AsyncEngine) -> set[str]:
    """The names of ``provider_attempts``' columns."""
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: {c["name"] for c in inspect(sync).get_columns("provider_attempts")}
        )


async def unverified_index(engine: AsyncEngine) -> str:
    """The sweep's index as the database defines it, lower-cased and without parentheses
    (PostgreSQL adds them), so one substring check fits both dialects."""
    query = (
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_provider_attempts_unverified'"
        if engine.dialect.name == "postgresql"
        else "SELECT sql FROM sqlite_master WHERE name = 'ix_provider_attempts_unverified'"
    )
    async with engine.connect() as conn:
        found = str(await conn.scalar(text(query)))
    return found.lower().replace("(", "").replace(")", "")
