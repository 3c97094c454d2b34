"""No span carries an account number in clear: real broker, SQLite and PostgreSQL.

The instrumentations record input: aiokafka the key of every record the consumer reads,
aiohttp-server the path and query string of every request. A command keyed by a card
number (refused and dead-lettered by the consumer) and a request with a card number in
its path and query must leave only the masked form in the exported spans, as the log
scrubber leaves it in a log line.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from paygate.settings import Environment, Settings
from persistence.api_key_store import ApiKeyStore
from persistence.engine import create_engine
from persistence.migrate import create_schema
from providers.sandbox import InProcessSandboxProvider
from telemetry.tracing import Tracing, TracingConfig, start_tracing
from tests.support.builders import SUCCESS_CARD, encoded_command
from tests.support.kafka_io import produce, read_until
from tests.support.services_in_process import running_services

pytestmark = pytest.mark.integration


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


def _texts(span: ReadableSpan) -> Iterator[str]:
    """Every string a span exports."""
    yield span.name
    if span.status.description:
        yield span.status.description
    attribute_sets = [span.attributes or {}]
    for event in span.events:
        yield event.name
        attribute_sets.append(event.attributes or {})
    for attributes in attribute_sets:
        for key, value in attributes.items():
            yield key
            values = value if isinstance(value, tuple | list) else (value,)
            yield from (str(item) for item in values)


async def test_a_card_in_a_kafka_key_or_a_url_is_masked_in_every_span(
    topics: Settings, database_url: str, tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    settings = topics.model_copy(
        update={
            "env": Environment.DEVELOPMENT,
            "tls_dir": tmp_path / "tls",
            "http_port": 0,
            "facade_ops_port": 0,
            "metrics_port": 0,
            "database_url": database_url,
        }
    )
    engine = create_engine(settings.database_url)
    await create_schema(engine)
    issued = await ApiKeyStore(engine).create("client-traces")
    await engine.dispose()
    _order_key, value, record = encoded_command()

    async with running_services(settings, InProcessSandboxProvider()) as services:
        # Keyed by a card number, not by its order id: the consumer refuses it.
        await produce(
            settings.require_kafka(), settings.commands_topic, [(SUCCESS_CARD.encode(), value)]
        )
        context = ssl.create_default_context(cafile=str(settings.tls_dir / "localhost.crt"))
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
            session.get(
                f"{services.facade_url}/v1/payments/{SUCCESS_CARD}?card={SUCCESS_CARD}",
                headers={"Authorization": f"Bearer {issued.api_key}"},
            ) as answer,
        ):
            assert answer.status in (400, 404), await answer.text()
        dead = await read_until(
            settings.require_kafka(),
            settings.dlq_topic,
            lambda records: any(r.value and record["orderId"].encode() in r.value for r in records),
        )
    assert dead

    spans = exporter.get_finished_spans()
    texts = [text for span in spans for text in _texts(span)]
    # The spans were there to leak: the consumer's read of the key, the facade's request.
    assert any(f"****{SUCCESS_CARD[-4:]}" in text for text in texts), texts
    assert [text for text in texts if SUCCESS_CARD in text] == []
