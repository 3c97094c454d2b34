from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from paygate.jsonlog import JsonFormatter
from paygate.settings import Environment, Settings
from paygate.topics import ensure_topics
from persistence.engine import create_engine
from persistence.migrate import create_schema
from tests.support.services import POSTGRES_URL_ENV, kafka_broker, service_missing

pytest_plugins = ["tests.support.webhook_fixtures"]

# The loggers paygate.jsonlog.configure_logging sets the level of, besides the root.
_CONFIGURED_LOGGERS = ("", "aiokafka", "alembic.runtime.plugins")


@pytest.fixture(autouse=True)
def _process_logging_put_back() -> Iterator[None]:
    """A test that runs a command's ``main`` in this process (``paygate db``, ``paygate
    webhooks`` ...) lets it configure the process's logging: a JSON handler on the stderr
    of that moment, which is the test's captured stream, closed when the test ends, and the
    root at INFO. Left so, every later test's every log line failed ("I/O operation on
    closed file", a stack printed per line) at a level that logs each payment. Its handler
    is taken off and the levels put back; pytest's own capture handlers are left to pytest.
    """
    levels = {name: logging.getLogger(name).level for name in _CONFIGURED_LOGGERS}
    root = logging.getLogger()
    before = set(root.handlers)
    yield
    for handler in list(root.handlers):
        if handler not in before and isinstance(handler.formatter, JsonFormatter):
            root.removeHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """One real broker for the whole session."""
    with kafka_broker() as bootstrap:
        yield bootstrap


@pytest.fixture
def topic_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings with topics and a consumer group of their own, so tests never share offsets."""
    suffix = uuid.uuid4().hex[:8]
    return Settings(
        # Development, as `paygate dev` runs: the tests play upstream producers that send
        # clear account numbers, which only development accepts (the vault's tests of the
        # production posture set PAYGATE_ACCEPT_CLEAR_ACCOUNT_NUMBERS off themselves).
        env=Environment.DEVELOPMENT,
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        commands_topic=f"payments.commands.{suffix}",
        results_topic=f"payments.results.{suffix}",
        dlq_topic=f"payments.commands.dlq.{suffix}",
        consumer_group=f"paygate-consumer-{suffix}",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'paygate.db'}",
    )


@pytest.fixture
async def topics(topic_settings: Settings) -> Settings:
    await ensure_topics(topic_settings)
    return topic_settings


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        service_missing(f"{POSTGRES_URL_ENV} is not set: no PostgreSQL to test against")
    assert url is not None
    return url


@contextlib.contextmanager
def _fresh_postgres_database(admin_url: str) -> Iterator[str]:
    """A database of its own, dropped afterwards, so tests never see each other's rows."""
    import asyncpg  # type: ignore[import-untyped]

    admin = make_url(admin_url)
    name = f"paygate_test_{uuid.uuid4().hex[:10]}"
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(run(f'CREATE DATABASE "{name}"'))
    except OSError as exc:
        service_missing(f"PostgreSQL at {admin.host}:{admin.port} is unreachable: {exc}")
    yield admin.set(database=name).render_as_string(hide_password=False)
    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_database_url(postgres_admin_url: str) -> Iterator[str]:
    with _fresh_postgres_database(postgres_admin_url) as url:
        yield url


@pytest.fixture
def fresh_postgres_database_url(postgres_admin_url: str) -> Iterator[str]:
    """A PostgreSQL database for this test alone: a test whose assertions read every row of
    a table (the vault's newest data key, say) must not see another test's."""
    with _fresh_postgres_database(postgres_admin_url) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'paygate.db'}"
        return
    with _fresh_postgres_database(request.getfixturevalue("postgres_admin_url")) as url:
        yield url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await create_schema(engine)
    yield engine
    await engine.dispose()
