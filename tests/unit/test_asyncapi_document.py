"""The AsyncAPI document is what the code does: generated from it, committed current, and
checked against the codec, the dead-letter router and the settings; served by the facade."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from consumer.dead_letters import DeadLetterRouter
from domain.errors import ErrorCode, PaygateError
from http_facade.app import build_app
from http_facade.asyncapi_routes import ASYNCAPI_PATH, asyncapi_document_bytes
from http_facade.rate_limit import TokenBuckets
from paygate.asyncapi_doc import asyncapi_document, asyncapi_text
from paygate.settings import Settings
from schemas.codec import (
    CANCEL_PAYMENT,
    CAPTURE_PAYMENT,
    CREATE_PAYMENT,
    PAYMENT_RESULT,
    REFUND_PAYMENT,
    REFUND_RESULT,
)
from schemas.registry import FileSchemaRegistry, full_name_of
from telemetry.metrics import Metrics

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "http_facade" / "asyncapi.json"
DOCUMENT: dict[str, Any] = json.loads(COMMITTED.read_text())
DEFAULTS = Settings.model_fields


def _schema_ref(message: dict[str, Any]) -> str:
    return str(message["payload"]["schema"]["$ref"])


def _channel_records(channel: str) -> dict[str, int]:
    """Record full name -> schema id, for each Avro message the channel lists."""
    files = FileSchemaRegistry.bundled()
    index = json.loads((ROOT / "schemas" / "schema_ids.json").read_text())["schemas"]
    id_of_file = {file_name: int(schema_id) for schema_id, file_name in index.items()}
    records: dict[str, int] = {}
    for ref in DOCUMENT["channels"][channel]["messages"].values():
        message = DOCUMENT["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
        target = (COMMITTED.parent / _schema_ref(message)).resolve()
        raw = json.loads(target.read_text())
        schema_id = id_of_file[target.name]
        assert files.full_name(schema_id) == full_name_of(raw)
        records[full_name_of(raw)] = schema_id
    return records


def test_the_committed_document_is_the_generated_one():
    assert COMMITTED.read_text() == asyncapi_text(), (
        "regenerate: python -m paygate.asyncapi_doc > http_facade/asyncapi.json"
    )


def test_each_topic_lists_the_records_the_codec_reads_there_at_the_ids_it_writes():
    files = FileSchemaRegistry.bundled()
    commands = _channel_records("commands")
    results = _channel_records("results")
    assert set(commands) == {CREATE_PAYMENT, REFUND_PAYMENT, CAPTURE_PAYMENT, CANCEL_PAYMENT}
    assert set(results) == {PAYMENT_RESULT, REFUND_RESULT}
    # The newest version of each: what paygate writes, and reads every older one against.
    for name, schema_id in {**commands, **results}.items():
        assert files.latest_id(name) == schema_id, name


def test_the_topics_and_group_are_the_settings_defaults():
    channels = DOCUMENT["channels"]
    assert channels["commands"]["address"] == DEFAULTS["commands_topic"].default
    assert channels["results"]["address"] == DEFAULTS["results_topic"].default
    assert channels["deadLetters"]["address"] == DEFAULTS["dlq_topic"].default
    group = DOCUMENT["operations"]["consumeCommands"]["bindings"]["kafka"]["groupId"]
    assert group["enum"] == [DEFAULTS["consumer_group"].default]


def test_every_message_is_keyed_by_the_order_id():
    for message in DOCUMENT["components"]["messages"].values():
        key = message["bindings"]["kafka"]["key"]
        assert key["type"] == "string"
        assert "order id" in key["description"]


class _Sent:
    def __init__(self) -> None:
        self.headers: list[tuple[str, bytes]] = []

    async def send_and_wait(self, _topic: str, _value: bytes, **kwargs: Any) -> None:
        self.headers = list(kwargs["headers"])


class _Producer:
    def __init__(self) -> None:
        self.client = _Sent()


async def test_the_dead_letter_headers_are_the_ones_the_router_writes():
    producer: Any = _Producer()
    router = DeadLetterRouter(producer, "payments.commands.dlq", Metrics(CollectorRegistry()))
    await router.route(
        value=b"x",
        key=b"order-1",
        topic="payments.commands",
        partition=0,
        offset=1,
        error=PaygateError(ErrorCode.MALFORMED_MESSAGE, "no"),
        reason="truncated_header",
    )
    written = [name for name, _ in producer.client.headers]
    headers = DOCUMENT["components"]["messages"]["deadLetter"]["headers"]
    assert headers["required"] == written
    assert list(headers["properties"]) == written


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    nothing: Any = None  # only public routes are called
    app = build_app(
        publisher=nothing,
        queries=nothing,
        refunds=nothing,
        waiter=nothing,
        metrics=Metrics(CollectorRegistry()),
        account_key=b"k",
        authenticator=nothing,
        rate_limiter=TokenBuckets(rate_per_s=1.0, burst=1),
        vault=nothing,
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client
    await client.close()


async def test_the_facade_serves_the_document_and_every_schema_it_references(client):
    async with client.get(ASYNCAPI_PATH) as response:
        assert response.status == 200
        assert await response.read() == asyncapi_document_bytes()
    for message in asyncapi_document()["components"]["messages"].values():
        if "schema" not in message["payload"]:
            continue  # the dead letter: raw bytes
        # Resolved as a reader of the served document resolves it.
        url = urljoin(ASYNCAPI_PATH, _schema_ref(message))
        async with client.get(url) as response:
            assert response.status == 200, url
            served = await response.json()
        assert served == json.loads((COMMITTED.parent / _schema_ref(message)).read_text())


@pytest.mark.parametrize(
    "path", ["/schemas/avro/nope.v1.avsc", "/schemas/avro/..%2Fschema_ids.json"]
)
async def test_only_shipped_schema_files_are_served(client, path):
    async with client.get(path) as response:
        assert response.status == 404
