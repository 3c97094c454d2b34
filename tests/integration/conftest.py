"""Fixtures only the integration tests need (the shared ones are in tests/conftest.py).

The payment store, its clock, the metrics, the in-process sandbox and a payment handler over
them are the same in most files, so they are defined once here. A file that needs another
one (a sandbox that times out fast, a real clock, a retry policy) overrides it and says why.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from devtools.kafka import LocalKafka
from devtools.kafka.certificates import LocalPki, make_local_pki
from devtools.kafka.secure_listeners import ScramUser, SecureListeners
from persistence.payment_store import PaymentStore
from providers.registry import Providers
from providers.routing import Router
from providers.sandbox import InProcessSandboxProvider
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import ACCOUNT_KEY
from tests.support.clock import Clock
from tests.support.services import service_missing
from tests.support.stripe_mock import run_stripe_mock


@pytest.fixture(scope="session")
def stripe_mock_url() -> Iterator[str]:
    """One stripe-mock for the session, its PaymentIntents answering ``succeeded``."""
    with run_stripe_mock() as url:
        yield url


@dataclass(frozen=True)
class SecureKafka:
    """The session's secured broker: its listeners, CA and SCRAM user."""

    broker: LocalKafka
    pki: LocalPki
    user: ScramUser


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """A second broker, started once and only for the tests that ask for it: a SASL_SSL
    listener with a SCRAM-SHA-512 user and a mutual-TLS listener, on a CA made here.

    Always the project's own launcher: a company-like listener set-up is not something a
    broker given by KAFKA_BOOTSTRAP_SERVERS or a plain container has.
    """
    from devtools.kafka.jars import KafkaLaunchError

    pki = make_local_pki(tmp_path_factory.mktemp("kafka-pki"), client_name="paygate-mtls")
    user = ScramUser("paygate-consumer", "a-scram-secret-for-tests", "SCRAM-SHA-512")
    broker = LocalKafka(secure=SecureListeners(pki, (user,)))
    try:
        broker.start()
    except KafkaLaunchError as exc:
        service_missing(f"the secured local Kafka broker did not start: {exc}")
    try:
        yield SecureKafka(broker, pki, user)
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def schema_registry() -> Iterator[str]:
    """A real Confluent-API-compatible registry (Apicurio 3.x) for the session, started only
    when a test asks for it; yields the base URL of its Confluent API."""
    from devtools.schema_registry import LocalSchemaRegistry, RegistryLaunchError

    registry = LocalSchemaRegistry()
    try:
        registry.start()
    except RegistryLaunchError as exc:
        service_missing(f"the local Schema Registry did not start: {exc}")
    try:
        yield registry.confluent_url
    finally:
        registry.stop()


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
        events=PaymentEvents(PaymentMessages.bundled(), "payments.results"),
        account_key=ACCOUNT_KEY,
        metrics=metrics,
        clock=clock,
    )
