"""A payment handler on a real store, paying through the in-process sandbox: for tests of
what the store does with payments (scoping, the statements it sends), not of a provider."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from persistence.payment_store import PaymentStore
from providers.registry import Providers
from providers.routing import Router
from providers.sandbox import InProcessSandboxProvider
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics


@contextlib.asynccontextmanager
async def sandbox_payment_handler(engine: AsyncEngine) -> AsyncIterator[PaymentCommandHandler]:
    """A handler over ``PaymentStore(engine)`` on the real clock, its sandbox started for
    the block and stopped after it."""
    provider = InProcessSandboxProvider()
    await provider.start()
    try:
        yield PaymentCommandHandler(
            store=PaymentStore(engine),
            providers=Providers.of(provider),
            router=Router.catch_all(provider.name),
            events=PaymentEvents(PaymentMessages.bundled(), "payments.results"),
            account_key=b"k",
            metrics=Metrics(),
        )
    finally:
        await provider.stop()
