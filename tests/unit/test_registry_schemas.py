"""The registry-backed schema source: registered ids written with, unknown ids fetched once,
a registry outage never a reason to dead-letter."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from consumer.record_handling import RecordHandling
from schemas.codec import CREATE_PAYMENT, AvroCodec
from schemas.payments import PaymentMessages
from schemas.registry import FileSchemaRegistry
from schemas.registry_schemas import RegistrySchemas, SchemaSourceUnavailable
from tests.support.builders import create_payment

pytestmark = pytest.mark.unit

SUBJECTS = {
    name: f"topic-{name}"
    for name in (
        "paygate.payments.v1.CreatePayment",
        "paygate.payments.v1.PaymentResult",
        "paygate.payments.v1.RefundPayment",
        "paygate.payments.v1.RefundResult",
        "paygate.payments.v1.CapturePayment",
        "paygate.payments.v1.CancelPayment",
    )
}


class FakeRegistry:
    """Assigns ids from 1001 on; ``down`` makes every call fail like a refused connection."""

    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}
        self.fetches: list[int] = []
        self.down = False

    async def register_schema(self, subject_name: str, schema: Schema) -> int:
        self._check()
        text = schema.schema_str or ""
        known = [i for i, s in self.schemas.items() if s == text]
        schema_id = known[0] if known else 1001 + len(self.schemas)
        self.schemas[schema_id] = text
        self.subjects.setdefault(subject_name, []).append(schema_id)
        return schema_id

    async def get_schema(self, schema_id: int) -> Schema:
        self.fetches.append(schema_id)
        self._check()
        if schema_id not in self.schemas:
            raise SchemaRegistryError(404, 40403, "Schema not found")
        return Schema(self.schemas[schema_id], "AVRO")

    def _check(self) -> None:
        if self.down:
            raise ConnectionRefusedError("registry down")


async def _source(registry: FakeRegistry) -> RegistrySchemas:
    source = RegistrySchemas(registry)
    await source.register_bundled(FileSchemaRegistry.bundled_schemas(), SUBJECTS)
    return source


async def test_paygate_writes_with_the_ids_the_registry_assigned_each_record_its_subject():
    registry = FakeRegistry()
    latest = await (await _source(registry)).register_bundled(
        FileSchemaRegistry.bundled_schemas(), SUBJECTS
    )
    assert all(schema_id > 1000 for schema_id in latest.values())
    assert len(registry.subjects["topic-paygate.payments.v1.CreatePayment"]) == 8  # v1-4, twice
    source = await _source(registry)
    data = PaymentMessages(AvroCodec(source)).encode_command(create_payment())
    assert int.from_bytes(data[1:5], "big") == latest[CREATE_PAYMENT]


async def test_a_writer_id_registered_by_someone_else_is_fetched_once_then_decodes():
    registry = FakeRegistry()
    source = await _source(registry)
    newest = FileSchemaRegistry.bundled_schemas()[5]  # create_payment.v3
    theirs = {**newest, "fields": [*newest["fields"], {"name": "x", "type": "int", "default": 0}]}
    foreign_id = await registry.register_schema("topic-x", Schema(json.dumps(theirs), "AVRO"))
    await source.learn(foreign_id)
    await source.learn(foreign_id)
    assert registry.fetches == [foreign_id]
    assert source.full_name(foreign_id) == CREATE_PAYMENT


async def test_an_id_the_registry_does_not_know_is_asked_once_and_stays_unknown():
    registry = FakeRegistry()
    source = await _source(registry)
    await source.learn(424242)
    await source.learn(424242)
    assert registry.fetches == [424242]
    assert source.schema(424242) is None


async def test_an_outage_after_start_leaves_cached_ids_working_and_unknown_ones_retryable():
    registry = FakeRegistry()
    source = await _source(registry)
    messages = PaymentMessages(AvroCodec(source))
    data = messages.encode_command(create_payment())
    registry.down = True
    await messages.learn_writer(data)  # cached: the registry is not asked
    assert messages.decode_command(data).amount.currency == "EUR"
    with pytest.raises(SchemaSourceUnavailable):
        await source.learn(5555)
    registry.down = False
    await source.learn(5555)  # not remembered as unknown while the registry was down
    assert registry.fetches == [5555, 5555]


async def test_the_consumer_retries_while_the_registry_is_down_and_dead_letters_nothing():
    calls: list[bytes] = []
    waits: list[float] = []
    routed: list[Any] = []

    async def learn(data: bytes) -> None:
        calls.append(data)
        if len(calls) < 3:
            raise SchemaSourceUnavailable("registry down")

    class Decoder:
        def decode_any_command(self, data: bytes) -> Any:
            return "command"

    class Handler:
        async def handle(self, command: object) -> object:
            return "done"

    class DeadLetters:
        async def route(self, **letter: Any) -> None:
            routed.append(letter)

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    handling = RecordHandling(
        messages=Decoder(),
        handler=Handler(),
        dead_letters=DeadLetters(),
        max_attempts=2,
        max_backoff_s=1.0,
        sleep=sleep,
        learn_writer=learn,
    )
    record = ConsumerRecord("t", 0, 1, 0, 0, b"k", b"\x00data", None, 0, 5, ())
    await handling.handle(record)
    assert len(calls) == 3
    assert waits == [0.1, 0.2]
    assert routed == []


async def test_a_registry_down_at_start_ends_the_process_naming_the_setting():
    from paygate.schema_source import SchemaRegistrySetupError, payment_messages
    from paygate.settings import Settings

    settings = Settings(schema_registry_url="http://127.0.0.1:1", schema_registry_timeout_s=2)
    with pytest.raises(SchemaRegistrySetupError) as refused:
        await payment_messages(settings)
    assert "PAYGATE_SCHEMA_REGISTRY_URL=http://127.0.0.1:1 cannot be reached" in str(
        refused.value.code
    )


async def test_without_a_registry_url_the_bundled_file_ids_are_used():
    from paygate.schema_source import payment_messages
    from paygate.settings import Settings

    data = (await payment_messages(Settings())).encode_command(create_payment())
    assert int.from_bytes(data[1:5], "big") == 10  # create_payment.v4 in schema_ids.json
