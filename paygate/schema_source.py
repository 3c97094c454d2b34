"""Where the process's schema ids come from: the bundled file, or a Schema Registry.

One setting selects: ``PAYGATE_SCHEMA_REGISTRY_URL`` unset keeps the ids of
``schemas/schema_ids.json`` (``make dev`` needs nothing more); set, paygate registers its
schemas there at start, each under ``<topic>-<record full name>`` (TopicRecordNameStrategy:
the commands topic carries CreatePayment, RefundPayment, CapturePayment and CancelPayment,
which must not be one another's versions), and writes with the ids the registry assigned.

A registry that is down or refuses a schema at start ends the process with one message
naming the setting; after start, cached ids never need it (see
:mod:`schemas.registry_schemas`).
"""

from __future__ import annotations

from confluent_kafka.schema_registry import AsyncSchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from paygate.settings import Settings
from schemas.codec import (
    CANCEL_PAYMENT,
    CAPTURE_PAYMENT,
    CREATE_PAYMENT,
    PAYMENT_RESULT,
    REFUND_PAYMENT,
    REFUND_RESULT,
    AvroCodec,
)
from schemas.payments import PaymentMessages
from schemas.registry import FileSchemaRegistry
from schemas.registry_schemas import RegistrySchemas, SchemaSourceUnavailable


class SchemaRegistrySetupError(SystemExit):
    """The registry could not take paygate's schemas at start: exit 1, message only."""


def subjects(settings: Settings) -> dict[str, str]:
    """Record full name -> its subject, ``<topic>-<full name>``."""
    on_topic = {
        CREATE_PAYMENT: settings.commands_topic,
        REFUND_PAYMENT: settings.commands_topic,
        CAPTURE_PAYMENT: settings.commands_topic,
        CANCEL_PAYMENT: settings.commands_topic,
        PAYMENT_RESULT: settings.results_topic,
        REFUND_RESULT: settings.results_topic,
    }
    return {name: f"{topic}-{name}" for name, topic in on_topic.items()}


async def payment_messages(settings: Settings) -> PaymentMessages:
    """The process's codec, with schema ids from the source the settings select."""
    if settings.schema_registry_url is None:
        return PaymentMessages.bundled()
    source, _ids = await _registered(settings, settings.schema_registry_url)
    return PaymentMessages(AvroCodec(source))


async def registered_ids(settings: Settings) -> dict[str, int]:
    """Register paygate's schemas; record full name -> the id it is written with."""
    if settings.schema_registry_url is None:
        raise SchemaRegistrySetupError("PAYGATE_SCHEMA_REGISTRY_URL is not set")
    _source, ids = await _registered(settings, settings.schema_registry_url)
    return ids


async def _registered(settings: Settings, url: str) -> tuple[RegistrySchemas, dict[str, int]]:
    client = AsyncSchemaRegistryClient({"url": url, "timeout": settings.schema_registry_timeout_s})
    source = RegistrySchemas(client, fetch_timeout_s=settings.schema_registry_timeout_s)
    try:
        ids = await source.register_bundled(
            FileSchemaRegistry.bundled_schemas(), subjects(settings)
        )
    except SchemaSourceUnavailable as exc:
        raise SchemaRegistrySetupError(
            f"the Schema Registry at PAYGATE_SCHEMA_REGISTRY_URL={url} cannot be reached: {exc}"
        ) from None
    except SchemaRegistryError as exc:
        raise SchemaRegistrySetupError(
            f"the Schema Registry at PAYGATE_SCHEMA_REGISTRY_URL={url} refused paygate's "
            f"schemas (HTTP {exc.http_status_code}: {exc.error_message}); an incompatible "
            "schema change, or a subject with a stricter rule?"
        ) from None
    return source, ids
