"""The facade, wired as the service wires it, while a real dependency is down.

- Kafka: a broker of this module's own (the session's is shared, and must not be killed)
  is SIGKILLed under a started producer, so its partition leaders stay known but
  unreachable: the state in which aiokafka waits without end. A create is answered 503
  with ``Retry-After`` (within ``PAYGATE_PUBLISH_TIMEOUT_S``, but no time is asserted);
  when the broker is back, the record given up on arrives after all, and the client's
  retry with the same key is the same payment.
- PostgreSQL: the facade reaches the database through a TCP forwarder that the test cuts
  (open connections reset, new ones refused) and restores. Every request is 503 with
  ``Retry-After``, the API-key lookup included; the outage is logged once when it starts,
  without a traceback, and once when it ends.
- Readiness: a facade and a consumer, run as the service runs them, answer ``/readyz`` on
  their ops listeners 503 naming ``database`` while PostgreSQL is cut and ``kafka`` while
  the broker is dead, 200 again when each is back; ``/healthz`` stays 200 throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import make_url

from devtools.kafka import KafkaLaunchError, LocalKafka
from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from domain.payments import CreatePayment, payment_request_id_for
from domain.refunds import RefundPayment
from paygate.facade_service import facade_app
from paygate.settings import Environment, Settings
from paygate.topics import ensure_topics
from persistence.api_key_store import ApiKeyStore
from persistence.database import Database
from persistence.engine import create_engine
from persistence.migrate import create_schema
from producer.command_publisher import KafkaCommandPublisher
from producer.kafka_producer import KafkaProducer
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.app_client import started_client
from tests.support.facade_world import payment_body
from tests.support.gated_provider import GatedProvider
from tests.support.kafka_io import read_until
from tests.support.ops_probe import until_readyz
from tests.support.result_watch import WatchByWaiting, watch_by_waiting
from tests.support.services import service_missing
from tests.support.services_in_process import running_services
from tests.support.tcp_proxy import TcpProxy
from tests.support.vault_keys import KEK_1
from vault.kek import LocalKeyEncryptionKeys
from vault.rows import VaultRows
from vault.vault import Vault

pytestmark = pytest.mark.integration

# A client retrying on 503 as the advice says gives up after this many tries.
MAX_TRIES = 30


class NoWait:
    async def wait_for_final(
        self, payment_request_id: str, timeout_s: float, *, refusal_event_id: str | None = None
    ) -> bool:
        return False

    def watch(
        self, payment_request_id: str, *, refusal_event_id: str | None = None
    ) -> contextlib.nullcontext[WatchByWaiting]:
        return watch_by_waiting(self.wait_for_final, payment_request_id)


class RecordingPublisher:
    def __init__(self) -> None:
        self.published: list[object] = []

    async def publish_create_payment(self, command: CreatePayment) -> None:
        self.published.append(command)

    async def publish_refund(self, command: RefundPayment) -> None:
        self.published.append(command)

    async def publish_capture(self, command: CapturePayment) -> None:
        self.published.append(command)

    async def publish_cancel(self, command: CancelPayment) -> None:
        self.published.append(command)


async def retried_on_503(
    client: TestClient[Any, Any], body: dict[str, Any], key: str
) -> aiohttp.ClientResponse:
    """The client the advice asks for: on 503, wait Retry-After seconds, retry, same key."""
    for _ in range(MAX_TRIES):
        response = await client.post("/v1/payments", json=body, headers={"Idempotency-Key": key})
        if response.status != 503:
            return response
        await asyncio.sleep(int(response.headers["Retry-After"]))
    raise AssertionError(f"still 503 after {MAX_TRIES} tries")


# --- Kafka -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_broker() -> Iterator[LocalKafka]:
    broker = LocalKafka(heap_mb=512, startup_timeout_s=180.0)
    try:
        broker.start()
    except KafkaLaunchError as exc:
        service_missing(f"no Kafka broker of its own for this module: {exc}")
    try:
        yield broker
    finally:
        broker.stop()


async def create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name=topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def test_a_create_while_kafka_is_down_is_503_and_its_retry_is_the_same_payment(
    own_broker: LocalKafka, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bootstrap = own_broker.bootstrap_servers
    topic = f"payments.commands.outage-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic)
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        commands_topic=topic,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'paygate.db'}",
        publish_timeout_s=1.0,
    )
    engine = create_engine(settings.database_url)
    await create_schema(engine)
    issued = await ApiKeyStore(engine).create("client-kafka-outage")
    messages = PaymentMessages.bundled()
    producer = KafkaProducer(
        {"bootstrap_servers": bootstrap}, client_id="paygate-facade-outage-test", stop_timeout_s=5.0
    )
    await producer.start()
    app = facade_app(
        settings,
        Metrics(CollectorRegistry()),
        db=Database(engine),
        publisher=KafkaCommandPublisher(
            producer, messages, topic, timeout_s=settings.publish_timeout_s
        ),
        waiter=NoWait(),
        vault=Vault(
            VaultRows(engine), LocalKeyEncryptionKeys.from_text(KEK_1), settings.account_key
        ),
    )
    client = await started_client(app, {"Authorization": f"Bearer {issued.api_key}"})
    caplog.set_level(logging.INFO)
    try:
        up = await client.post(
            "/v1/payments", json=payment_body("order-up"), headers={"Idempotency-Key": "k-up"}
        )
        assert up.status == 202  # the partition's leader is known from here on

        own_broker.kill()
        down = await client.post(
            "/v1/payments", json=payment_body("order-down"), headers={"Idempotency-Key": "k-1"}
        )
        body = await down.json()
        assert (down.status, body["error"]["code"]) == (503, "service_unavailable")
        assert int(down.headers["Retry-After"]) >= 1
        # aiokafka logs its own reconnection attempts; paygate says it once.
        assert [
            r.getMessage()
            for r in caplog.records
            if r.levelno >= logging.ERROR and r.name.startswith("paygate")
        ] == ["kafka unreachable"]

        await asyncio.to_thread(own_broker.restart)
        retried = await retried_on_503(client, payment_body("order-down"), "k-1")
        expected = payment_request_id_for("order-down", "k-1", 0, "client-kafka-outage")
        assert retried.status == 202
        assert (await retried.json())["paymentRequestId"] == expected

        # The record given up on arrived after all, beside the retry's: the same payment.
        records = await read_until(
            bootstrap, topic, lambda rs: sum(r.key == b"order-down" for r in rs) >= 2
        )
        copies = [messages.decode_command(r.value) for r in records if r.key == b"order-down"]
        assert {c.payment_request_id for c in copies} == {expected}
        assert any("reached Kafka later" in r.getMessage() for r in caplog.records)
    finally:
        await client.close()
        await producer.stop()
        await engine.dispose()


# --- PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture
async def proxy(postgres_database_url: str) -> AsyncIterator[TcpProxy]:
    url = make_url(postgres_database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    yield proxy
    await proxy.cut()


async def test_a_database_outage_is_503_and_logged_once_when_it_starts_and_once_when_it_ends(
    postgres_database_url: str, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    direct = create_engine(postgres_database_url)
    await create_schema(direct)
    keys = ApiKeyStore(direct)
    cached = await keys.create(f"client-{uuid.uuid4().hex[:8]}")
    uncached = await keys.create(f"client-{uuid.uuid4().hex[:8]}")
    await direct.dispose()

    via_proxy = (
        make_url(postgres_database_url)
        .set(host="127.0.0.1", port=proxy.port)
        .render_as_string(hide_password=False)
    )
    settings = Settings(database_url=via_proxy, api_key_cache_s=60)
    engine = create_engine(via_proxy)
    app = facade_app(
        settings,
        Metrics(CollectorRegistry()),
        db=Database(engine),
        publisher=RecordingPublisher(),
        waiter=NoWait(),
        vault=Vault(
            VaultRows(engine), LocalKeyEncryptionKeys.from_text(KEK_1), settings.account_key
        ),
    )
    client = await started_client(app)

    def bearer(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    try:
        response = await client.get("/v1/payments?orderId=o", headers=bearer(cached.api_key))
        assert response.status == 200  # the key is cached from here on
        caplog.set_level(logging.DEBUG)

        await proxy.cut()
        requests = [
            # A cached key: the request reaches its queries, which fail.
            ("GET", "/v1/payments?orderId=o", cached.api_key, None),
            ("GET", "/v1/payments/pay_" + "0" * 32, cached.api_key, None),
            ("POST", "/v1/payments", cached.api_key, payment_body("order-db")),
            # A key not cached: the API-key lookup itself fails.
            ("GET", "/v1/payments?orderId=o", uncached.api_key, None),
        ]
        for method, path, key, body in requests * 3:
            async with client.request(method, path, headers=bearer(key), json=body) as answer:
                error = (await answer.json())["error"]
                assert (answer.status, error["code"]) == (503, "service_unavailable"), path
                assert int(answer.headers["Retry-After"]) >= 1
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert [(r.name, r.getMessage()) for r in errors] == [
            ("paygate.http", "database unreachable")
        ]
        assert [r for r in caplog.records if r.exc_info] == []

        caplog.clear()
        await proxy.start()
        for key in (cached.api_key, uncached.api_key):
            response = await client.get("/v1/payments?orderId=o", headers=bearer(key))
            assert response.status == 200
        ended = [r for r in caplog.records if "database" in r.getMessage()]
        assert [(r.levelname, r.getMessage()[:28]) for r in ended] == [
            ("INFO", "database reachable again aft")
        ]
    finally:
        await client.close()
        await engine.dispose()


# --- Readiness of running services -------------------------------------------------------------


async def test_readyz_names_the_dependency_that_is_down_on_the_facade_and_the_consumer(
    own_broker: LocalKafka, postgres_database_url: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    via_proxy = (
        make_url(postgres_database_url)
        .set(host="127.0.0.1", port=proxy.port)
        .render_as_string(hide_password=False)
    )
    settings = Settings(
        env=Environment.DEVELOPMENT,
        KAFKA_BOOTSTRAP_SERVERS=own_broker.bootstrap_servers,
        commands_topic=f"payments.commands.ready-{suffix}",
        results_topic=f"payments.results.ready-{suffix}",
        dlq_topic=f"payments.commands.dlq.ready-{suffix}",
        consumer_group=f"paygate-ready-{suffix}",
        database_url=via_proxy,
        tls_dir=tmp_path / "tls",
        http_port=0,
        facade_ops_port=0,
        metrics_port=0,
    )
    await ensure_topics(settings)
    async with running_services(settings, GatedProvider()) as services:
        processes = (services.facade_ops_url, services.consumer_ops_url)
        for url in processes:
            await until_readyz(url, 200)

        await proxy.cut()
        for url in processes:
            body = await until_readyz(url, 503, {"database"})
            assert body["status"] == "not_ready"
        async with aiohttp.ClientSession() as session:
            for url in processes:
                async with session.get(f"{url}/healthz") as live:
                    assert live.status == 200  # liveness is not readiness
        await proxy.start()
        for url in processes:
            await until_readyz(url, 200)

        own_broker.kill()
        for url in processes:
            await until_readyz(url, 503, {"kafka"} if url == services.consumer_ops_url else None)
        facade_report = await until_readyz(services.facade_ops_url, 503)
        assert facade_report["checks"]["kafka"] == "failing"
        await asyncio.to_thread(own_broker.restart)
        for url in processes:
            await until_readyz(url, 200, timeout_s=90)
