"""``paygate facade --workers 2``: two processes on one port, one rate limit between them.

The facade runs as an operator would start it, on a real broker and the store (SQLite and
PostgreSQL). Every request goes on a new connection, so the kernel spreads them over both
workers (SO_REUSEPORT hashes each connection's address); each worker's ops listener shows
that it served some. The client's bucket holds ``BURST`` requests and refills once a
minute: with the limit in each process, two workers would let ``2 * BURST`` through; with
the limit in the database, exactly ``BURST`` pass whichever worker answers.
"""

from __future__ import annotations

import asyncio
import re
import selectors
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from paygate.topics import ensure_topics
from tests.support.child_env import child_environment
from tests.support.processes import environment_of
from tests.support.stack import create_api_key, isolated_settings

pytestmark = pytest.mark.e2e

BURST = 6
REQUESTS = 24
START_TIMEOUT_S = 90.0
_REQUESTS_SERVED = re.compile(
    r'^paygate_http_request_seconds_count\{[^}]*route="/v1/payments"[^}]*\} ([0-9.e+]+)$',
    re.MULTILINE,
)


class Workers:
    def __init__(self, url: str, ops_urls: list[str], api_key: str, cert: Path) -> None:
        self.url = url
        self.ops_urls = ops_urls
        self.api_key = api_key
        self.cert = cert


@pytest.fixture(params=["sqlite", "postgresql"])
def workers(
    request: pytest.FixtureRequest, kafka_bootstrap: str, tmp_path: Path
) -> Iterator[Workers]:
    if request.param == "sqlite":
        database_url = f"sqlite+aiosqlite:///{tmp_path / 'paygate.db'}"
    else:
        database_url = request.getfixturevalue("postgres_database_url")
    settings = isolated_settings(
        kafka_bootstrap,
        tmp_path,
        database_url,
        "workers",
        rate_limit_per_s=1 / 60,
        rate_limit_burst=BURST,
    )
    asyncio.run(ensure_topics(settings))
    env = environment_of(settings)
    api_key = create_api_key(env, "workers")
    process = subprocess.Popen(
        [sys.executable, "-m", "paygate.cli", "facade", "--workers", "2"],
        env=child_environment(env),
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "facade.log").open("w"),
        text=True,
        start_new_session=True,
    )
    try:
        url, ops_urls = _announced(process, tmp_path / "facade.log")
        yield Workers(url, ops_urls, api_key, tmp_path / "tls" / "localhost.crt")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=60)
    assert returncode == 0, (tmp_path / "facade.log").read_text()[-3000:]


def _announced(process: subprocess.Popen[str], log: Path) -> tuple[str, list[str]]:
    """The supervisor's PAYGATE_URL and the workers' PAYGATE_OPS_URLs printed before it."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    ops_urls: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        if not selector.select(timeout=0.5):
            continue
        line = process.stdout.readline().strip()
        if line.startswith("PAYGATE_OPS_URL="):
            ops_urls.append(line.split("=", 1)[1])
        elif line.startswith("PAYGATE_URL="):
            return line.split("=", 1)[1], ops_urls
    raise AssertionError(f"the facade did not announce its URL:\n{log.read_text()[-3000:]}")


async def _served_by_each(ops_urls: list[str]) -> list[float]:
    served = []
    async with aiohttp.ClientSession() as session:
        for ops_url in ops_urls:
            async with session.get(f"{ops_url}/metrics") as response:
                text = await response.text()
            served.append(sum(float(n) for n in _REQUESTS_SERVED.findall(text)))
    return served


async def _statuses(workers: Workers) -> list[int]:
    context = ssl.create_default_context(cafile=str(workers.cert))
    statuses = []
    for n in range(REQUESTS):
        # A connection per request: each is hashed to a worker on its own.
        connector = aiohttp.TCPConnector(ssl=context, force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(
                f"{workers.url}/v1/payments",
                params={"orderId": f"order-{n}"},
                headers={"Authorization": f"Bearer {workers.api_key}"},
            ) as response,
        ):
            statuses.append(response.status)
    return statuses


def test_two_workers_share_the_port_and_one_rate_limit(workers: Workers) -> None:
    statuses = asyncio.run(_statuses(workers))
    assert len(workers.ops_urls) == 2
    served = asyncio.run(_served_by_each(workers.ops_urls))
    assert all(count > 0 for count in served), f"a worker served nothing: {served}"
    assert sum(served) == REQUESTS
    assert statuses.count(200) == BURST, statuses
    assert statuses.count(429) == REQUESTS - BURST, statuses
