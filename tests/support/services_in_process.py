"""A facade and a consumer, wired as ``paygate facade`` and ``paygate consumer`` wire them,
run in the test's event loop, each with its ops listener on a free port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from paygate.consumer_service import ConsumerService
from paygate.facade_service import FacadeService
from paygate.ops_server import ops_url, start_ops_server
from paygate.settings import Settings
from providers.port import PaymentProvider
from providers.registry import Providers
from providers.routing import Router
from telemetry.metrics import Metrics
from tests.support.child_env import assert_settings_use_free_ports


@dataclass(frozen=True)
class RunningServices:
    facade_url: str
    facade_ops_url: str
    consumer_ops_url: str
    facade_metrics: Metrics
    consumer_metrics: Metrics


@contextlib.asynccontextmanager
async def running_services(
    settings: Settings, provider: PaymentProvider
) -> AsyncIterator[RunningServices]:
    """``settings`` must not leave ``http_port``, ``facade_ops_port`` or ``metrics_port`` on
    its default (0: any free port), which a ``paygate dev`` beside the test may hold."""
    assert_settings_use_free_ports(settings, "http_port", "facade_ops_port", "metrics_port")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    facade_metrics, consumer_metrics = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    consumer = ConsumerService(
        settings, Providers.of(provider), consumer_metrics, Router.catch_all(provider.name)
    )
    consumer_ops = await start_ops_server(
        consumer_metrics, consumer.readiness, settings.metrics_host, settings.metrics_port
    )
    facade = FacadeService(settings, facade_metrics)
    ready: asyncio.Future[str] = loop.create_future()
    ops_ready: asyncio.Future[str] = loop.create_future()
    tasks = [
        asyncio.create_task(consumer.run(stop), name="consumer"),
        asyncio.create_task(facade.run(stop, ready, ops_ready), name="facade"),
    ]
    try:
        started: set[asyncio.Future[Any]] = {ready, *tasks}
        await asyncio.wait(started, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                task.result()  # a service that died at start-up says why
        yield RunningServices(
            facade_url=ready.result(),
            facade_ops_url=ops_ready.result(),
            consumer_ops_url=ops_url(consumer_ops),
            facade_metrics=facade_metrics,
            consumer_metrics=consumer_metrics,
        )
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
        await consumer_ops.cleanup()
