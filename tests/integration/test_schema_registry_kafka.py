"""paygate with its schema ids from a real registry (Apicurio 3.x, Confluent API), talking
to another library's registry-aware Avro serializer and deserializer (confluent-kafka's),
not to its own codec."""

from __future__ import annotations

import json
import struct
from importlib import resources
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from paygate.schema_source import payment_messages
from paygate.settings import Settings
from providers.sandbox import InProcessSandboxProvider
from schemas.registry import FileSchemaRegistry
from tests.support.builders import create_payment_record
from tests.support.child_env import child_environment
from tests.support.consumer_run import running_consumer
from tests.support.kafka_io import produce, read_until

pytestmark = pytest.mark.integration

FILE_INDEX = resources.files("schemas").joinpath("schema_ids.json")
FILE_NAMES = {int(i): name for i, name in json.loads(FILE_INDEX.read_text())["schemas"].items()}


def _foreign_writer_schema() -> str:
    """CreatePayment as another team's producer may hold it: paygate's newest version plus
    a field of their own (with a default, so it stays compatible): a version of its own."""
    newest = [s for s in FileSchemaRegistry.bundled_schemas() if s["name"] == "CreatePayment"][-1]
    extra = {"name": "channel", "type": ["null", "string"], "default": None}
    return json.dumps({**newest, "fields": [*newest["fields"], extra]})


def _schema_id(value: bytes) -> int:
    return int(struct.unpack(">bI", value[:5])[1])


async def test_a_foreign_serializer_payment_is_processed_and_its_result_read_by_the_same_library(
    topics: Settings, schema_registry: str
):
    settings = topics.model_copy(update={"schema_registry_url": schema_registry})
    await payment_messages(settings)  # paygate's schemas first, as a deployed paygate has
    client = SchemaRegistryClient({"url": schema_registry})
    serializer = AvroSerializer(
        client,
        _foreign_writer_schema(),
        conf={
            "auto.register.schemas": True,
            "subject.name.strategy": topic_record_subject_name_strategy,
        },
    )
    record: dict[str, Any] = {**create_payment_record(), "channel": "mobile-app"}
    value = serializer(record, SerializationContext(settings.commands_topic, MessageField.VALUE))
    assert value is not None
    # The registry's id: schema_ids.json has no CreatePayment under it (it may name another
    # schema there, as the registry numbers subjects in the order they came).
    assert not FILE_NAMES.get(_schema_id(value), "").startswith("create_payment")
    await produce(
        settings.kafka_bootstrap_servers or "",
        settings.commands_topic,
        [(record["orderId"].encode(), value)],
    )

    async with running_consumer(settings, InProcessSandboxProvider()):
        [result] = await read_until(
            settings.kafka_bootstrap_servers or "", settings.results_topic, lambda rs: len(rs) >= 1
        )

    deserializer = AvroDeserializer(client)
    event = deserializer(
        result.value, SerializationContext(settings.results_topic, MessageField.VALUE)
    )
    assert event["orderId"] == record["orderId"]
    assert event["status"] == "succeeded"
    # Written with the id the registry assigned to PaymentResult, not a file id.
    registered = client.get_latest_version(
        f"{settings.results_topic}-paygate.payments.v1.PaymentResult"
    )
    assert _schema_id(result.value) == registered.schema_id


def test_paygate_schemas_register_prints_the_ids_the_registry_assigned(
    schema_registry: str, tmp_path
):
    import subprocess
    import sys
    import uuid

    topic = f"reg.{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        [sys.executable, "-m", "paygate.cli", "schemas", "register"],
        env=child_environment(
            {
                "PAYGATE_SCHEMA_REGISTRY_URL": schema_registry,
                "PAYGATE_COMMANDS_TOPIC": f"{topic}.commands",
                "PAYGATE_RESULTS_TOPIC": f"{topic}.results",
            }
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    ids = json.loads(done.stdout)
    client = SchemaRegistryClient({"url": schema_registry})
    for name, schema_id in ids.items():
        on = "results" if name.endswith("Result") else "commands"
        latest = client.get_latest_version(f"{topic}.{on}-{name}")
        assert latest.schema_id == schema_id
    assert len(ids) == 6  # the commands topic's four records, the results topic's two
