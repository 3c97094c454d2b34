"""Fixtures only the integration tests need (the shared ones are in tests/conftest.py).

The payment store, its clock, the metrics, the in-process sandbox and a payment handler over
them are the same in most files, so they are defined once here. A file that needs another
one (a sandbox that times out fast, a real clock, a retry policy) overrides it and says why.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.payment_handler import PaymentCommandHandler
from consumer.results import ResultEvents
from persistence.payment_store import PaymentStore
from providers.registry import Providers
from providers.routing import Router
from providers.sandbox import InProcessSandboxProvider
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import ACCOUNT_KEY
from tests.support.clock import Clock
from tests.support.stripe_mock import run_stripe_mock


@pytest.fixture(scope="session")
def stripe_mock_url() -> Iterator[str]:
    """One stripe-mock for the session, its PaymentIntents answering ``succeeded``."""
    with run_stripe_mock() as url:
        yield url


@pytest.fixture
def clock() -> Clock:
    """Stands still until a test moves it (claims expire, payments age for reconcilers)."""
    return Clock()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def store(engine: AsyncEngine, clock: Clock) -> PaymentStore:
    return PaymentStore(engine, clock)


@pytest.fixture
async def provider() -> AsyncIterator[InProcessSandboxProvider]:
    """The sandbox in process, with its default timings."""
    async with InProcessSandboxProvider() as provider:
        yield provider


@pytest.fixture
def handler(
    store: PaymentStore, provider: InProcessSandboxProvider, metrics: Metrics, clock: Clock
) -> PaymentCommandHandler:
    return PaymentCommandHandler(
        store=store,
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=ResultEvents(PaymentMessages.bundled(), "payments.results"),
        account_key=ACCOUNT_KEY,
        metrics=metrics,
        clock=clock,
    )
