"""Renders the AsyncAPI 3.0 document of paygate's three topics, ``http_facade/asyncapi.json``.

``python -m paygate.asyncapi_doc > http_facade/asyncapi.json`` writes it; a test keeps the
committed file equal to what this module renders, and another validates it with the
AsyncAPI CLI. Everything in it comes from the code: topic names and the consumer group from
the settings' defaults, the records each topic carries from the codec, the schema files
from ``schemas/schema_ids.json`` (the newest version of each record: what paygate writes,
and reads every older version of), the dead-letter headers from
:mod:`consumer.dead_letters`. So the document cannot drift from the code.

Schemas are referenced, never copied: ``../schemas/avro/<file>`` is relative to this
document both in the repository (and an installed package, where the two packages sit side
by side) and when the facade serves it, as ``/asyncapi.json`` beside
``/schemas/avro/<file>``.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Final

from consumer.dead_letters import (
    HEADER_ERROR_CODE,
    HEADER_FIRST_SEEN,
    HEADER_MESSAGE,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_TOPIC,
    REPUBLISHED_PREFIX,
)
from paygate.settings import Settings
from schemas.codec import (
    CANCEL_PAYMENT,
    CAPTURE_PAYMENT,
    CREATE_PAYMENT,
    PAYMENT_RESULT,
    REFUND_PAYMENT,
    REFUND_RESULT,
)
from schemas.registry import full_name_of

AVRO_FORMAT: Final = "application/vnd.apache.avro+json;version=1.9.0"
KAFKA_BINDING_VERSION: Final = "0.5.0"
SCHEMA_DIR: Final = "../schemas/avro"

# The records each topic carries, in the order the document lists them.
COMMAND_RECORDS: Final = (CREATE_PAYMENT, REFUND_PAYMENT, CAPTURE_PAYMENT, CANCEL_PAYMENT)
RESULT_RECORDS: Final = (PAYMENT_RESULT, REFUND_RESULT)

_DEAD_LETTER_HEADERS: Final = {
    HEADER_ERROR_CODE: "The error code from the catalogue (docs/errors.md), e.g. unknown_schema.",
    HEADER_REASON: "Why, more precisely: truncated_header, invalid_value:orderId, "
    "rule_violation, ... (docs/dead-letters.md).",
    HEADER_MESSAGE: "The error's message, for people; never branch on it.",
    HEADER_TOPIC: "The topic the message was read from.",
    HEADER_PARTITION: "Its partition, in decimal.",
    HEADER_OFFSET: "Its offset, in decimal.",
    HEADER_FIRST_SEEN: "ISO 8601 time it was first dead-lettered; kept when a re-published "
    "message fails again.",
}


def newest_schema_files() -> dict[str, str]:
    """Record full name -> the ``.avsc`` file of its newest version (highest schema id)."""
    root = resources.files("schemas")
    index: dict[str, str] = json.loads(root.joinpath("schema_ids.json").read_text())["schemas"]
    newest: dict[str, str] = {}
    for schema_id in sorted(index, key=int):
        raw = json.loads(root.joinpath("avro", index[schema_id]).read_text())
        newest[full_name_of(raw)] = index[schema_id]
    return newest


def _message_key(full_name: str) -> str:
    name = full_name.rsplit(".", 1)[1]
    return name[0].lower() + name[1:]


def _order_key(what: str) -> dict[str, Any]:
    return {
        "key": {
            "type": "string",
            "description": f"The order id ({what}'s orderId), UTF-8: every message of one "
            "order goes to one partition, so a refund, capture or cancel is handled after its "
            "payment.",
        },
        "bindingVersion": KAFKA_BINDING_VERSION,
    }


def _avro_message(full_name: str, file_name: str, summary: str) -> dict[str, Any]:
    return {
        "name": full_name.rsplit(".", 1)[1],
        "title": full_name,
        "summary": summary,
        "contentType": "application/octet-stream",
        "description": "Confluent wire format: magic byte 0, the writer's 4-byte schema id "
        "(from schemas/schema_ids.json, or the Schema Registry's when "
        "PAYGATE_SCHEMA_REGISTRY_URL is set; subject <topic>-<record full name>), then "
        "the Avro binary body.",
        "payload": {"schemaFormat": AVRO_FORMAT, "schema": {"$ref": f"{SCHEMA_DIR}/{file_name}"}},
        "bindings": {"kafka": _order_key("the record")},
    }


_SUMMARIES: Final = {
    CREATE_PAYMENT: "Charge a payer for an order.",
    REFUND_PAYMENT: "Refund all or part of a succeeded payment.",
    CAPTURE_PAYMENT: "Capture an authorize-only payment.",
    CANCEL_PAYMENT: "Cancel (void) an authorize-only payment.",
    PAYMENT_RESULT: "A payment's new state; with refusal true, only the answer to a "
    "refused CreatePayment, which leaves the payment named unchanged.",
    REFUND_RESULT: "A refund's new state; with refusal true, only the answer to a "
    "refused RefundPayment, which leaves the refund named unchanged.",
}


def _default(setting: str) -> str:
    # The defaults, not Settings(): the committed document must not depend on the
    # environment of whoever generates it.
    return str(Settings.model_fields[setting].default)


def asyncapi_document() -> dict[str, Any]:
    """The document, for the settings' default topics and group."""
    commands, results = _default("commands_topic"), _default("results_topic")
    dlq, group = _default("dlq_topic"), _default("consumer_group")
    files = newest_schema_files()
    messages = {
        _message_key(name): _avro_message(name, files[name], _SUMMARIES[name])
        for name in (*COMMAND_RECORDS, *RESULT_RECORDS)
    }
    messages["deadLetter"] = {
        "name": "DeadLetter",
        "title": "A command that can never be processed",
        "contentType": "application/octet-stream",
        "description": "The original key and value bytes, unchanged (any of the commands "
        "messages, or bytes that are none of them); the headers say why and where from. "
        f"Headers starting {REPUBLISHED_PREFIX} are carried over from an earlier "
        "re-publication. See docs/dead-letters.md.",
        "payload": {"type": "string", "format": "binary"},
        "headers": {
            "type": "object",
            "required": list(_DEAD_LETTER_HEADERS),
            "properties": {
                header: {"type": "string", "description": text}
                for header, text in _DEAD_LETTER_HEADERS.items()
            },
        },
        "bindings": {"kafka": _order_key("the original message")},
    }

    def refs(keys: list[str], channel: str) -> dict[str, Any]:
        return {key: {"$ref": f"#/channels/{channel}/messages/{key}"} for key in keys}

    command_keys = [_message_key(n) for n in COMMAND_RECORDS]
    result_keys = [_message_key(n) for n in RESULT_RECORDS]
    consumer_binding = {
        "kafka": {
            "groupId": {"type": "string", "enum": [group]},
            "bindingVersion": KAFKA_BINDING_VERSION,
        }
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "paygate Kafka topics",
            "version": "1.0.0",
            "description": "What paygate reads and writes on Kafka. Generated by "
            "`python -m paygate.asyncapi_doc` from the code; topic names and the group are "
            "the settings' defaults (PAYGATE_COMMANDS_TOPIC, PAYGATE_RESULTS_TOPIC, "
            "PAYGATE_DLQ_TOPIC, PAYGATE_CONSUMER_GROUP). Who may write what: docs/kafka.md.",
        },
        "defaultContentType": "application/octet-stream",
        "channels": {
            "commands": {
                "address": commands,
                "description": "Payment, refund, capture and cancel commands from upstream "
                "services and the REST facade.",
                "messages": {k: {"$ref": f"#/components/messages/{k}"} for k in command_keys},
                "bindings": {"kafka": {"topic": commands}},
            },
            "results": {
                "address": results,
                "description": "Result events, written by the consumer's outbox relay only. "
                "A reader that keeps the last state per payment or refund skips those with "
                "refusal true (see docs/kafka.md).",
                "messages": {k: {"$ref": f"#/components/messages/{k}"} for k in result_keys},
                "bindings": {"kafka": {"topic": results}},
            },
            "deadLetters": {
                "address": dlq,
                "description": "Commands that can never be processed.",
                "messages": {"deadLetter": {"$ref": "#/components/messages/deadLetter"}},
                "bindings": {"kafka": {"topic": dlq}},
            },
        },
        "operations": {
            "consumeCommands": {
                "action": "receive",
                "summary": "The consumer handles each command, in order per order id.",
                "channel": {"$ref": "#/channels/commands"},
                "messages": list(refs(command_keys, "commands").values()),
                "bindings": consumer_binding,
            },
            "publishResults": {
                "action": "send",
                "summary": "The consumer publishes each state change of a payment or refund.",
                "channel": {"$ref": "#/channels/results"},
                "messages": list(refs(result_keys, "results").values()),
            },
            "deadLetterCommands": {
                "action": "send",
                "summary": "The consumer moves a command it can never process here.",
                "channel": {"$ref": "#/channels/deadLetters"},
                "messages": [{"$ref": "#/channels/deadLetters/messages/deadLetter"}],
            },
        },
        "components": {"messages": messages},
    }


def asyncapi_text() -> str:
    return json.dumps(asyncapi_document(), indent=2) + "\n"


if __name__ == "__main__":
    print(asyncapi_text(), end="")
