"""One trace per payment, from the REST call to the result event, on a real broker.

The facade and the consumer run in this event loop as the service wires them
(``running_services``), on SQLite and on PostgreSQL; the provider is the sandbox
acquirer's HTTP service, also in-process; and tracing is started as ``paygate consumer``
starts it, with an in-memory exporter instead of OTLP. The spans must form one tree:

    POST (the test's client) > POST /v1/payments (facade) > <commands> send
      > <commands> process (consumer) > POST (provider call) > POST /v1/charges (acquirer)
                                      > the store's statements
      > (through the outbox row) <results> send > <results> receive (the facade's listener)

and the result event's ``traceparent`` header must name the results send. A command an
upstream service produced with its own ``traceparent`` continues that service's trace.
"""

from __future__ import annotations

import contextlib
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from paygate.settings import Environment, Settings
from paygate.topics import ensure_topics
from persistence.api_key_store import ApiKeyStore
from persistence.engine import create_engine
from persistence.migrate import create_schema
from providers.sandbox.acquirer import SandboxAcquirer
from providers.sandbox.adapter import SandboxHttpProvider
from providers.sandbox.ledger import MemoryLedger
from providers.sandbox.service import build_sandbox_app
from telemetry.tracing import Tracing, TracingConfig, start_tracing
from tests.support.builders import encoded_command
from tests.support.consumer_run import running_consumer
from tests.support.facade_world import payment_body
from tests.support.kafka_io import read_until
from tests.support.services_in_process import running_services

pytestmark = pytest.mark.integration

UPSTREAM_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
UPSTREAM_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test, as a process turns it on, spans kept in memory."""
    spans = InMemorySpanExporter()
    tracing = start_tracing(
        TracingConfig(otlp_endpoint=None, sample_ratio=1.0),
        "paygate-test",
        processor=SimpleSpanProcessor(spans),
    )
    assert isinstance(tracing, Tracing)
    try:
        yield spans
    finally:
        tracing.stop()


@contextlib.asynccontextmanager
async def sandbox_service() -> AsyncIterator[str]:
    runner = web.AppRunner(build_sandbox_app(SandboxAcquirer(MemoryLedger())))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _development(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={
            "env": Environment.DEVELOPMENT,
            "tls_dir": tmp_path / "tls",
            "http_port": 0,
            "facade_ops_port": 0,
            "metrics_port": 0,
        }
    )


def _traceparent(headers: list[tuple[str, bytes]]) -> tuple[str, str]:
    values = [value.decode() for key, value in headers if key == "traceparent"]
    assert len(values) == 1, headers
    _version, trace_id, span_id, _flags = values[0].split("-")
    return trace_id, span_id


class Tree:
    """The finished spans, by id, with questions about their parentage."""

    def __init__(self, spans: tuple[ReadableSpan, ...]) -> None:
        self.spans = spans
        self.by_id = {span.context.span_id: span for span in spans}

    def named(self, name: str, kind: SpanKind | None = None) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name and (kind is None or s.kind == kind)]

    def one(self, name: str, kind: SpanKind | None = None) -> ReadableSpan:
        found = self.named(name, kind)
        assert len(found) == 1, f"{name}: {[s.name for s in self.spans]}"
        return found[0]

    def parent_of(self, span: ReadableSpan) -> ReadableSpan | None:
        return None if span.parent is None else self.by_id.get(span.parent.span_id)

    def descends(self, span: ReadableSpan, ancestor: ReadableSpan) -> bool:
        current = self.parent_of(span)
        while current is not None:
            if current.context.span_id == ancestor.context.span_id:
                return True
            current = self.parent_of(current)
        return False


def _hex_trace(span: ReadableSpan) -> str:
    return format(span.context.trace_id, "032x")


def _hex_span(span: ReadableSpan) -> str:
    return format(span.context.span_id, "016x")


async def test_a_rest_payment_is_one_trace_from_the_request_to_the_result_event(
    topics: Settings, database_url: str, tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    settings = _development(topics, tmp_path).model_copy(update={"database_url": database_url})
    engine = create_engine(settings.database_url)
    await create_schema(engine)
    issued = await ApiKeyStore(engine).create("client-tracing")
    await engine.dispose()
    order = f"order-{uuid.uuid4().hex[:12]}"

    async with (
        sandbox_service() as sandbox_url,
        running_services(settings, SandboxHttpProvider(sandbox_url)) as services,
    ):
        context = ssl.create_default_context(cafile=str(settings.tls_dir / "localhost.crt"))
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
            session.post(
                f"{services.facade_url}/v1/payments",
                json=payment_body(order),
                headers={
                    "Authorization": f"Bearer {issued.api_key}",
                    "Idempotency-Key": uuid.uuid4().hex,
                    "Prefer": "wait=20",
                },
            ) as answer,
        ):
            assert answer.status == 200, await answer.text()
            assert (await answer.json())["status"] == "succeeded"
        results = await read_until(
            settings.require_kafka(),
            settings.results_topic,
            lambda records: any(r.key == order.encode() for r in records),
        )
    result = next(r for r in results if r.key == order.encode())

    tree = Tree(exporter.get_finished_spans())
    request = tree.one("POST /v1/payments", SpanKind.SERVER)
    trace_id = _hex_trace(request)
    command_send = tree.one(f"{settings.commands_topic} send", SpanKind.PRODUCER)
    assert tree.parent_of(command_send) is request
    process = tree.one(f"{settings.commands_topic} process", SpanKind.CONSUMER)
    assert tree.parent_of(process) is command_send
    # The provider call, and the acquirer's side of it (traceparent sent over HTTP).
    charge = tree.one("POST /v1/charges", SpanKind.SERVER)
    provider_call = tree.parent_of(charge)
    assert provider_call is not None
    assert provider_call.kind == SpanKind.CLIENT
    assert tree.descends(provider_call, process)
    # The store's writes, the write-ahead and the outcome with its outbox row among them.
    statements = [
        s
        for s in tree.spans
        if s.kind == SpanKind.CLIENT and "db.system" in (s.attributes or {})
        if tree.descends(s, process)
    ]
    inserts = [s for s in statements if s.name.startswith("INSERT")]
    assert inserts, [s.name for s in statements]
    # The result event: published later by the relay, from the row, in the same trace.
    result_send = tree.one(f"{settings.results_topic} send", SpanKind.PRODUCER)
    assert tree.descends(result_send, process)
    assert _traceparent(result.headers) == (trace_id, _hex_span(result_send))
    # The facade's result listener reads it on: its receive span continues the trace too.
    receives = tree.named(f"{settings.results_topic} receive", SpanKind.CONSUMER)
    assert any(tree.parent_of(span) is result_send for span in receives)
    # And all of it is one trace, the REST call's.
    for span in (command_send, process, provider_call, charge, *statements, result_send):
        assert _hex_trace(span) == trace_id, span.name


async def test_a_command_with_an_upstream_traceparent_continues_that_trace(
    topic_settings: Settings, tmp_path: Path
) -> None:
    settings = _development(topic_settings, tmp_path)
    await ensure_topics(settings)
    key, value, record = encoded_command()
    upstream = f"00-{UPSTREAM_TRACE}-{UPSTREAM_SPAN}-01"
    # Produced before tracing starts here: the upstream service's own client, its own header.
    producer = AIOKafkaProducer(bootstrap_servers=settings.require_kafka(), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.commands_topic, value, key=key, headers=[("traceparent", upstream.encode())]
        )
    finally:
        await producer.stop()

    spans = InMemorySpanExporter()
    tracing = start_tracing(
        TracingConfig(None, sample_ratio=0.0),  # kept all the same: the upstream sampled it
        "paygate-test",
        processor=SimpleSpanProcessor(spans),
    )
    assert tracing is not None
    try:
        async with (
            sandbox_service() as sandbox_url,
            running_consumer(settings, SandboxHttpProvider(sandbox_url)),
        ):
            results = await read_until(
                settings.require_kafka(),
                settings.results_topic,
                lambda records: any(r.key == key for r in records),
            )
    finally:
        tracing.stop()
    result = next(r for r in results if r.key == key)

    tree = Tree(spans.get_finished_spans())
    process = tree.one(f"{settings.commands_topic} process", SpanKind.CONSUMER)
    assert _hex_trace(process) == UPSTREAM_TRACE
    assert process.parent is not None
    assert format(process.parent.span_id, "016x") == UPSTREAM_SPAN
    result_send = tree.one(f"{settings.results_topic} send", SpanKind.PRODUCER)
    assert tree.descends(result_send, process)
    assert _traceparent(result.headers) == (UPSTREAM_TRACE, _hex_span(result_send))
    assert record["orderId"].encode() == key
