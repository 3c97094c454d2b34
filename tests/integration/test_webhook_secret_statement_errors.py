"""A failed statement that writes a clear webhook signing secret never carries it out.

Sealing a clear secret (revision 0017's upgrade, an old facade during a roll) and unsealing
it (before a downgrade) bind the clear value to their UPDATE. A database error's text
carries the statement's parameters, and that text reaches the logs: the housekeeping
job's first unexplained failure is logged with its traceback, and a start that fails
prints it. So the error these statements raise must not show their parameters.
"""

from __future__ import annotations

import asyncio
import io
import logging
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.periodic import run_periodically
from paygate.jsonlog import JsonFormatter
from persistence.database import Database
from persistence.webhook_store import new_secret
from tests.support.webhook_vault import with_sealed_secrets

pytestmark = pytest.mark.integration


async def insert_clear(engine: AsyncEngine, secret: str) -> None:
    """An endpoint as a release before 0017 writes it: its secret in clear."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO webhook_endpoints (id, client_id, url, enabled_events, secret, "
                "created_at) VALUES ('we_old', 'acme', 'https://hooks.example/in', "
                "'[\"*\"]', :secret, :at)"
            ),
            {"secret": secret, "at": datetime.now(UTC)},
        )


async def refuse_updates(engine: AsyncEngine) -> None:
    """Every UPDATE of an endpoint fails with an error that is not an outage."""
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(
                text(
                    "CREATE FUNCTION refuse_update() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'refused'; END $$"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE UPDATE ON webhook_endpoints "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_update()"
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE UPDATE ON webhook_endpoints "
                    "BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            )


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """What the service's JSON log handler writes, for the housekeeping logger."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("paygate.housekeeping")
    logger.addHandler(handler)
    try:
        yield out
    finally:
        logger.removeHandler(handler)


def assert_absent(secret: str, printed: str) -> None:
    assert printed  # something was printed: the statement did fail
    assert secret not in printed
    assert secret.removeprefix("whsec_") not in printed


async def test_a_failed_seal_does_not_print_the_clear_secret(engine: AsyncEngine) -> None:
    secret = new_secret()
    await insert_clear(engine, secret)
    await refuse_updates(engine)
    db = with_sealed_secrets(Database(engine))

    with pytest.raises(Exception) as failed:  # noqa: PT011 (the driver's own error type)
        await db.webhooks.secrets.seal_clear()

    # What a start that fails on it prints.
    assert_absent(secret, "".join(traceback.format_exception(failed.value)))


async def test_a_failed_seal_in_housekeeping_does_not_log_the_clear_secret(
    engine: AsyncEngine, json_log: io.StringIO
) -> None:
    secret = new_secret()
    await insert_clear(engine, secret)
    await refuse_updates(engine)
    db = with_sealed_secrets(Database(engine))
    stop = asyncio.Event()

    async def housekeeping() -> int:
        try:
            return await db.webhooks.secrets.seal_clear()
        finally:
            stop.set()  # one run

    await run_periodically(stop, 3600.0, housekeeping, "webhook secrets sealed")

    assert_absent(secret, json_log.getvalue())


async def test_a_failed_unseal_does_not_print_the_clear_secret(engine: AsyncEngine) -> None:
    db = with_sealed_secrets(Database(engine))
    created = await db.webhooks.create_endpoint("acme", "https://hooks.example/in", ["*"], None)
    await refuse_updates(engine)

    with pytest.raises(Exception) as failed:  # noqa: PT011 (the driver's own error type)
        await db.webhooks.secrets.unseal_all()

    # What `paygate keys unseal-webhook-secrets` prints when it fails.
    assert_absent(created.secret, "".join(traceback.format_exception(failed.value)))
