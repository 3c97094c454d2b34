"""Runs a ConsumerService in the test's event loop for the duration of a ``with`` block."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from paygate.consumer_service import ConsumerService
from paygate.settings import Settings
from providers.port import PaymentProvider
from providers.registry import Providers
from providers.routing import Router
from telemetry.metrics import Metrics


@asynccontextmanager
async def running_consumer(settings: Settings, provider: PaymentProvider) -> AsyncIterator[Metrics]:
    """Yield the running consumer's metrics; on exit stop it as SIGTERM would, and wait."""
    metrics = Metrics()
    stop = asyncio.Event()
    task = asyncio.create_task(
        ConsumerService(
            settings, Providers.of(provider), metrics, Router.catch_all(provider.name)
        ).run(stop)
    )
    try:
        yield metrics
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
