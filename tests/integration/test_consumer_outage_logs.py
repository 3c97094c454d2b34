"""A running consumer through a PostgreSQL outage: a few lines, not a traceback per try.

The consumer reaches PostgreSQL through a TCP forwarder. Once it has processed a first
command, the forwarder resets every connection (counting them), and commands keep
arriving: every one of them retries at each back-off step, and the relay and the
reconcilers fail their passes. When the forwarder has reset many connections (the tries
really happened) it forwards again, and the test waits until every command's result is
out. The consumer's loggers must have written the outage's start and end lines and at
most a few others, none with a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.engine import make_url

from paygate.settings import Settings
from persistence.engine import create_engine
from persistence.migrate import create_schema
from providers.sandbox import InProcessSandboxProvider
from tests.support.builders import encoded_command
from tests.support.consumer_run import running_consumer
from tests.support.kafka_io import produce, read_until
from tests.support.metric_samples import sample_sum
from tests.support.ops_probe import eventually
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

COMMANDS = 30
# Connection attempts the outage must have seen before it ends: many per command.
RESETS = 3 * COMMANDS
CONSUMER_LOGGERS = ("paygate.consumer", "paygate.outbox", "paygate.housekeeping")


@pytest.fixture
async def proxy(fresh_postgres_database_url: str) -> AsyncIterator[TcpProxy]:
    url = make_url(fresh_postgres_database_url)
    forwarder = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await forwarder.start()
    try:
        yield forwarder
    finally:
        await forwarder.cut()


async def test_a_database_outage_under_load_is_logged_when_it_starts_and_ends(
    topics: Settings,
    fresh_postgres_database_url: str,
    proxy: TcpProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    direct = create_engine(fresh_postgres_database_url)
    await create_schema(direct)
    await direct.dispose()
    via_proxy = (
        make_url(fresh_postgres_database_url)
        .set(host="127.0.0.1", port=proxy.port)
        .render_as_string(hide_password=False)
    )
    settings = topics.model_copy(update={"database_url": via_proxy})
    bootstrap = settings.require_kafka()
    first_key, first, _ = encoded_command()
    batch = [encoded_command()[:2] for _ in range(COMMANDS)]

    async with running_consumer(settings, InProcessSandboxProvider()) as metrics:
        await produce(bootstrap, settings.commands_topic, [(first_key, first)])
        await read_until(bootstrap, settings.results_topic, lambda rs: len(rs) >= 1)
        caplog.clear()
        caplog.set_level(logging.DEBUG)

        await proxy.reset_all()
        await produce(bootstrap, settings.commands_topic, batch)

        async def tried_often() -> bool:
            return proxy.resets >= RESETS

        async def all_in_flight() -> bool:
            return sample_sum(metrics, "paygate_commands_in_flight") == COMMANDS

        await eventually(all_in_flight, timeout_s=120)
        await eventually(tried_often, timeout_s=120)
        await proxy.restore()
        await read_until(bootstrap, settings.results_topic, lambda rs: len(rs) >= 1 + COMMANDS)

    lines = [r for r in caplog.records if r.name in CONSUMER_LOGGERS]
    said = [(r.levelname, r.getMessage()) for r in lines]
    assert ("ERROR", "database unreachable") in said
    assert any(
        level == "INFO" and text.startswith("database reachable again") for level, text in said
    )
    assert [r for r in lines if r.exc_info] == []
    # One outage per loop that meets it (handling, relay, each periodic job): start and end
    # lines, and a summary a minute at most; never one per command and try.
    assert len([m for _, m in said if "unreachable" in m]) <= 12, said
    assert proxy.resets >= RESETS
