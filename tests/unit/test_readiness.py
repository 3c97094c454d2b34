"""Readiness: a registry of named checks, and ``GET /readyz`` answering 200 or 503 from it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from http_facade.app import build_app
from http_facade.rate_limit import TokenBuckets
from telemetry.metrics import Metrics
from telemetry.readiness import Readiness
from tests.support.app_client import started_client
from tests.support.memory_vault import memory_vault

pytestmark = pytest.mark.unit


class Flag:
    def __init__(self, up: bool = True) -> None:
        self.up = up

    async def __call__(self) -> bool:
        return self.up


async def _raises() -> bool:
    raise ConnectionError("the database is gone")


async def _hangs() -> bool:
    await asyncio.Event().wait()
    return True


async def test_without_checks_the_facade_is_ready() -> None:
    report = await Readiness().report()
    assert (report.ready, dict(report.checks)) == (True, {})


async def test_the_report_names_every_check_and_is_ready_only_if_all_pass() -> None:
    readiness = Readiness()
    listener, database = Flag(), Flag()
    readiness.add("result_listener", listener)
    readiness.add("database", database)
    assert (await readiness.report()).ready
    listener.up = False
    report = await readiness.report()
    assert not report.ready
    assert dict(report.checks) == {"result_listener": False, "database": True}


async def test_a_check_that_raises_or_hangs_fails_and_is_logged(caplog) -> None:
    # A zero timeout expires at the hanging check's first await: no real waiting.
    readiness = Readiness(timeout_s=0.0)
    readiness.add("raises", _raises)
    readiness.add("hangs", _hangs)
    with caplog.at_level(logging.WARNING, logger="paygate.readiness"):
        report = await readiness.report()
    assert dict(report.checks) == {"raises": False, "hangs": False}
    assert {r.check for r in caplog.records} == {"raises", "hangs"}
    assert all(r.exc_info is None for r in caplog.records)


def test_a_name_is_registered_once() -> None:
    readiness = Readiness()
    readiness.add("result_listener", Flag())
    with pytest.raises(ValueError, match="already registered"):
        readiness.add("result_listener", Flag())


async def _client(readiness: Readiness | None):
    nothing: Any = None  # /readyz and /healthz call no port and need no key
    app = build_app(
        publisher=nothing,
        queries=nothing,
        refunds=nothing,
        waiter=nothing,
        metrics=Metrics(CollectorRegistry()),
        account_key=b"k",
        vault=memory_vault(b"k"),
        authenticator=nothing,
        rate_limiter=TokenBuckets(rate_per_s=1.0, burst=1),
        readiness=readiness,
    )
    return await started_client(app)


async def test_readyz_is_200_while_the_listener_runs_and_503_while_it_is_down() -> None:
    listener = Flag()
    readiness = Readiness()
    readiness.add("result_listener", listener)
    client = await _client(readiness)
    try:
        async with client.get("/readyz") as response:
            assert response.status == 200
            assert await response.json() == {
                "status": "ready",
                "checks": {"result_listener": "ok"},
            }
        listener.up = False
        async with client.get("/readyz") as response:
            assert response.status == 503
            assert response.content_type == "application/json"
            assert await response.json() == {
                "status": "not_ready",
                "checks": {"result_listener": "failing"},
            }
        # Liveness stays liveness: the process answers.
        async with client.get("/healthz") as response:
            assert (response.status, await response.json()) == (200, {"status": "ok"})
    finally:
        await client.close()


async def test_readyz_without_a_registry_is_ready() -> None:
    client = await _client(None)
    try:
        async with client.get("/readyz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ready", "checks": {}}
    finally:
        await client.close()


async def _ops_client(readiness: Readiness, metrics: Metrics):
    from aiohttp.test_utils import TestClient, TestServer

    from paygate.ops_server import build_ops_app

    client: TestClient[Any, Any] = TestClient(TestServer(build_ops_app(metrics, readiness)))
    await client.start_server()
    return client


async def test_the_ops_listener_serves_metrics_liveness_and_readiness() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.outbox_backlog.set(3)
    database, kafka = Flag(), Flag()
    readiness = Readiness()
    readiness.add("database", database)
    readiness.add("kafka", kafka)
    client = await _ops_client(readiness, metrics)
    try:
        async with client.get("/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=")
            assert "paygate_outbox_backlog 3.0" in await response.text()
        kafka.up = False
        async with client.get("/readyz") as response:
            assert response.status == 503
            assert await response.json() == {
                "status": "not_ready",
                "checks": {"database": "ok", "kafka": "failing"},
            }
        async with client.get("/healthz") as response:
            assert (response.status, await response.json()) == (200, {"status": "ok"})
    finally:
        await client.close()


async def test_a_service_not_started_yet_is_not_ready_on_any_check() -> None:
    from paygate.consumer_service import ConsumerService
    from paygate.facade_service import FacadeService
    from paygate.settings import Settings
    from providers.registry import Providers
    from tests.support.gated_provider import GatedProvider

    settings = Settings()
    metrics = Metrics(CollectorRegistry())
    consumer = ConsumerService(settings, Providers.of(GatedProvider()), metrics)
    facade = FacadeService(settings, metrics)
    consumer_report = await consumer.readiness.report()
    facade_report = await facade.readiness.report()
    assert dict(consumer_report.checks) == {
        "database": False,
        "kafka": False,
        "consumer_assignment": False,
        "outbox_relay": False,
    }
    assert dict(facade_report.checks) == {
        "database": False,
        "kafka": False,
        "result_listener": False,
    }


async def test_a_check_is_logged_when_it_starts_failing_and_when_it_passes_again(caplog) -> None:
    database = Flag()
    readiness = Readiness()
    readiness.add("database", database)
    with caplog.at_level(logging.INFO, logger="paygate.readiness"):
        await readiness.report()
        database.up = False
        for _ in range(5):  # probes keep coming during an outage
            await readiness.report()
        database.up = True
        await readiness.report()
        await readiness.report()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "readiness check database answered not ready"),
        ("INFO", "readiness check database passes again"),
    ]
