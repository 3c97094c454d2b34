"""A real Prometheus scrapes a running consumer and facade under a small load.

The same Debian package as promtool provides the server. It is started with a config of
the test's own (scrape every second, the two ops listeners as targets, the repository's
alert rules), and asked through its HTTP API:

- both targets are up and the alert rules loaded;
- the dashboard's key panels (by title, their queries as written in
  monitoring/grafana/paygate.json) return data;
- and ``promtool check metrics`` passes on a real scrape of each process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
import socket
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from paygate.settings import Environment, Settings
from persistence.api_key_store import ApiKeyStore
from persistence.engine import create_engine
from persistence.migrate import create_schema
from tests.support.facade_world import payment_body
from tests.support.gated_provider import GatedProvider
from tests.support.ops_probe import eventually, scrape
from tests.support.promql import run_promtool, with_grafana_variables_replaced
from tests.support.services import service_missing
from tests.support.services_in_process import RunningServices, running_services

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "monitoring" / "grafana" / "paygate.json"
# Panels that have data under any load (no error, dead letter or rate limit needed).
KEY_PANELS = (
    "Payment rate by status",
    "Command to result latency",
    "Provider latency",
    "Consumer lag",
    "Commands in flight",
    "Outbox backlog",
    "In-doubt attempts",
    "Database write lock",
    "Webhook backlog",
    "HTTP requests by route",
    "HTTP latency",
)
# Rates over a window holding a few of the 1 s scrapes.
RATE_WINDOW = "5s"
MAX_REQUESTS = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def prometheus_server(work: Path, targets: dict[str, str]) -> Iterator[str]:
    """A Prometheus scraping ``targets`` ({job: host:port}) every second; yields its URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        service_missing("prometheus is not installed (Debian package prometheus)")
    assert binary is not None
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "monitoring" / "alerts.yml")],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]}
            for job, target in targets.items()
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    address = f"127.0.0.1:{_free_port()}"
    with (work / "prometheus.log").open("w") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address={address}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://{address}"
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _api(session: aiohttp.ClientSession, url: str, **params: str) -> Any:
    async with session.get(url, params=params) as answer:
        body = await answer.json()
        assert body["status"] == "success", body
        return body["data"]


@contextlib.asynccontextmanager
async def small_load(services: RunningServices, cert: Path, api_key: str) -> AsyncIterator[None]:
    """Payments created (and awaited) one after another until the block ends."""
    context = ssl.create_default_context(cafile=str(cert))

    async def load() -> None:
        async with aiohttp.ClientSession(
            base_url=services.facade_url,
            connector=aiohttp.TCPConnector(ssl=context),
            headers={"Authorization": f"Bearer {api_key}"},
        ) as session:
            # One at a time, each awaited: a load of a few payments a second, bounded.
            for _ in range(MAX_REQUESTS):
                key = uuid.uuid4().hex
                async with session.post(
                    "/v1/payments",
                    json=payment_body(f"order-{key[:12]}"),
                    headers={"Idempotency-Key": key, "Prefer": "wait=5"},
                ) as answer:
                    assert answer.status in (200, 202), await answer.text()
                    body = await answer.json()
                async with session.get(f"/v1/payments/{body['paymentRequestId']}") as answer:
                    assert answer.status == 200

    task = asyncio.create_task(load())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _key_queries() -> dict[str, list[str]]:
    panels = {
        p["title"]: [t["expr"] for t in p.get("targets", [])]
        for p in json.loads(DASHBOARD.read_text())["panels"]
    }
    return {title: panels[title] for title in KEY_PANELS}


def _has_a_number(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(series["value"][1])) for series in result)


async def test_prometheus_gets_the_dashboards_key_queries_from_a_running_stack(
    topics: Settings, tmp_path: Path
) -> None:
    settings = topics.model_copy(
        update={
            "env": Environment.DEVELOPMENT,
            "tls_dir": tmp_path / "tls",
            "http_port": 0,
            "facade_ops_port": 0,
            "metrics_port": 0,
            "ops_sample_interval_s": 0.5,
            # The load below sends as fast as answers come: on a quiet machine that is more
            # than the default 25/s, and a 429 would fail it. Rate limits are tested elsewhere.
            "rate_limit_per_s": 10_000.0,
            "rate_limit_burst": 10_000,
        }
    )
    engine = create_engine(settings.database_url)
    await create_schema(engine)
    issued = await ApiKeyStore(engine).create("client-prometheus")
    await engine.dispose()

    async with running_services(settings, GatedProvider()) as services:
        for url in (services.consumer_ops_url, services.facade_ops_url):
            done = await asyncio.to_thread(
                run_promtool, "check", "metrics", input_text=await scrape(url)
            )
            assert done.returncode == 0, f"{url}: {done.stdout}{done.stderr}"

        targets = {
            "paygate-consumer": services.consumer_ops_url.removeprefix("http://"),
            "paygate-facade": services.facade_ops_url.removeprefix("http://"),
        }
        cert = settings.tls_dir / "localhost.crt"
        with prometheus_server(tmp_path, targets) as prometheus:
            async with (
                small_load(services, cert, issued.api_key),
                aiohttp.ClientSession(base_url=prometheus) as session,
            ):

                async def ready() -> bool:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get("/-/ready") as answer:
                            return answer.status == 200
                    return False

                await eventually(ready, timeout_s=30)

                async def targets_up() -> bool:
                    data = await _api(session, "/api/v1/targets")
                    health = {t["labels"]["job"]: t["health"] for t in data["activeTargets"]}
                    return health == dict.fromkeys(targets, "up")

                await eventually(targets_up, timeout_s=30)
                groups = (await _api(session, "/api/v1/rules"))["groups"]
                assert {g["name"] for g in groups} == {"paygate"}

                for title, expressions in _key_queries().items():
                    for expr in expressions:
                        query = with_grafana_variables_replaced(expr).replace(
                            "[1m]", f"[{RATE_WINDOW}]"
                        )

                        async def answers(query: str = query) -> bool:
                            data = await _api(session, "/api/v1/query", query=query)
                            return _has_a_number(data["result"])

                        try:
                            await eventually(answers, timeout_s=30)
                        except AssertionError as exc:
                            raise AssertionError(f"{title}: no data for {query}") from exc
