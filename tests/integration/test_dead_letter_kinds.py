"""Every poison kind in the dead-letter topic with every header exact, and back with `paygate dlq`.

``test_pipeline_kafka.py`` sends the common poison kinds through the consumer and checks their
code and reason; ``test_dlq_command.py`` drives ``paygate dlq`` in-process. This file covers
what neither asserts: the rarer kinds of each family (an undecodable body, trailing bytes, a
record of another schema, invalid values besides amount and currency), the original partition
and offset exactly, a first-seen header that is a real time, and a re-publish of every kind
through the ``paygate`` executable, after which each is dead-lettered again, pointing at the
re-published copy and keeping the time it was first seen.
"""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from aiokafka import ConsumerRecord

from consumer.dead_letter_redaction import mask_numbers_in
from consumer.dead_letters import (
    HEADER_ERROR_CODE,
    HEADER_FIRST_SEEN,
    HEADER_MESSAGE,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_TOPIC,
)
from paygate.dlq import HEADER_REPUBLISHED_AT, HEADER_REPUBLISHED_FROM
from paygate.settings import Settings
from providers.sandbox import InProcessSandboxProvider
from schemas.codec import CREATE_PAYMENT, PAYMENT_RESULT
from schemas.registry import FileSchemaRegistry
from tests.support.builders import SUCCESS_CARD, encoded_command
from tests.support.child_env import child_environment
from tests.support.clear_numbers import numbers_in
from tests.support.consumer_run import running_consumer
from tests.support.kafka_io import produce, read_until
from tests.support.metric_samples import dead_lettered

pytestmark = pytest.mark.integration

DLQ_HEADERS = {
    HEADER_ERROR_CODE,
    HEADER_REASON,
    HEADER_MESSAGE,
    HEADER_TOPIC,
    HEADER_PARTITION,
    HEADER_OFFSET,
    HEADER_FIRST_SEEN,
}


@dataclass(frozen=True)
class Poison:
    key: bytes
    value: bytes
    code: str
    reason: str


# The kinds the redaction masks in place rather than keeping byte for byte.
_MASKED = frozenset(
    {
        "not-wire-format",
        "empty",
        "truncated",
        "trailing-bytes",
        "undecodable-body",
        "unknown-id",
        "another-record",
        "bad-account-number",
    }
)


def _wire(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", schema_id) + body


def _poison_kinds() -> list[Poison]:
    registry = FileSchemaRegistry.bundled()
    _, valid, _ = encoded_command()
    body = valid[5:]

    def invalid(**overrides: object) -> bytes:
        return encoded_command(**overrides)[1]

    kinds = {
        # Undecodable: not Confluent wire format, or an Avro body that does not read.
        "not-wire-format": (b'{"orderId": "o-1"}', "malformed_message", "bad_magic_byte"),
        "empty": (b"", "malformed_message", "truncated_header"),
        "truncated": (valid[:20], "malformed_message", "truncated_body"),
        "trailing-bytes": (valid + b"\x00\x01", "malformed_message", "trailing_bytes"),
        "undecodable-body": (
            _wire(registry.latest_id(CREATE_PAYMENT), b"\xff" * 40),
            "malformed_message",
            "undecodable_body",
        ),
        # Unknown schema: an id nobody registered, or the id of another record.
        "unknown-id": (_wire(4242, body), "unknown_schema", "unknown_id"),
        "another-record": (
            _wire(registry.latest_id(PAYMENT_RESULT), body),
            "unknown_schema",
            "unexpected_record",
        ),
        # Invalid values: decodes, but breaks the domain's rules.
        "negative-amount": (
            invalid(amount=Decimal("-5.00")),
            "invalid_amount",
            "invalid_value:amount",
        ),
        "zero-amount": (invalid(amount=Decimal("0")), "invalid_amount", "invalid_value:amount"),
        # Above what Alipay takes for one trade (ACQ.TOTAL_FEE_EXCEED): refused at intake.
        "alipay-above-limit": (
            invalid(amount=Decimal("100000000.01"), currency="CNY", paymentMethod="alipay"),
            "invalid_amount",
            "invalid_value:amount",
        ),
        "too-many-decimals": (
            invalid(amount=Decimal("1.001")),
            "invalid_amount",
            "invalid_value:amount",
        ),
        "unknown-currency": (
            invalid(currency="XYZ"),
            "unsupported_currency",
            "invalid_value:currency",
        ),
        "bad-account-number": (
            invalid(payerAccount={"type": "card", "number": "12", "holderName": None}),
            "invalid_request",
            "invalid_value:payerAccount.number",
        ),
        "bad-idempotency-key": (
            invalid(idempotencyKey="has a space"),
            "invalid_request",
            "invalid_value:idempotencyKey",
        ),
        "bad-order-id": (invalid(orderId=""), "invalid_request", "invalid_value:orderId"),
        "control-character": (
            invalid(metadata={"note": "nul\x00"}),
            "invalid_text",
            "invalid_value:metadata.note",
        ),
    }
    return [
        Poison(f"poison-{name}".encode(), value, code, reason)
        for name, (value, code, reason) in kinds.items()
    ]


def _headers(record: ConsumerRecord) -> dict[str, str]:
    return {key: value.decode() for key, value in record.headers}


def _by_key(records: list[ConsumerRecord]) -> dict[bytes, list[ConsumerRecord]]:
    grouped: dict[bytes, list[ConsumerRecord]] = {}
    for record in records:
        grouped.setdefault(record.key, []).append(record)
    return grouped


def _paygate(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``paygate`` entry point as its own process, configured from the environment."""
    assert settings.kafka_bootstrap_servers
    return subprocess.run(
        [sys.executable, "-m", "paygate.cli", *args],
        env=child_environment(
            {
                "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
                "PAYGATE_COMMANDS_TOPIC": settings.commands_topic,
                "PAYGATE_DLQ_TOPIC": settings.dlq_topic,
            }
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_every_poison_kind_is_dead_lettered_with_its_headers_and_comes_back_again(
    topics: Settings,
) -> None:
    bootstrap = topics.kafka_bootstrap_servers
    assert bootstrap
    poison = _poison_kinds()
    expected = {p.key: p for p in poison}
    before = datetime.now(UTC)
    await produce(bootstrap, topics.commands_topic, [(p.key, p.value) for p in poison])
    originals = {
        r.key: r
        for r in await read_until(
            bootstrap, topics.commands_topic, lambda rs: len(rs) >= len(poison)
        )
    }

    async with running_consumer(topics, InProcessSandboxProvider()) as metrics:
        dead = await read_until(bootstrap, topics.dlq_topic, lambda rs: len(rs) >= len(poison))
    after = datetime.now(UTC)

    assert sorted(r.key for r in dead) == sorted(expected)
    first_seen: dict[bytes, str] = {}
    first_value: dict[bytes, bytes] = {}
    for record in dead:
        kind, original, headers = expected[record.key], originals[record.key], _headers(record)
        name = record.key.decode()
        if numbers_in(kind.value):
            # A clear number never reaches the dead-letter topic (redacted or tokenized).
            assert numbers_in(record.value) == [], name
        elif name.removeprefix("poison-") in _MASKED:
            # Does not decode (or its account is refused): every long digit run is masked,
            # and a random id or key sometimes holds eight digits in a row.
            assert record.value == mask_numbers_in(kind.value), name
        else:
            assert record.value == kind.value, name  # the bytes as they came, untouched
        assert set(headers) == DLQ_HEADERS, name
        assert (headers[HEADER_ERROR_CODE], headers[HEADER_REASON]) == (kind.code, kind.reason)
        assert headers[HEADER_MESSAGE], name
        assert headers[HEADER_TOPIC] == topics.commands_topic
        assert (int(headers[HEADER_PARTITION]), int(headers[HEADER_OFFSET])) == (
            original.partition,
            original.offset,
        ), name
        seen = datetime.fromisoformat(headers[HEADER_FIRST_SEEN])
        assert seen.tzinfo is not None, name
        assert before <= seen <= after, name
        assert SUCCESS_CARD not in "".join(headers.values())
        first_seen[record.key] = headers[HEADER_FIRST_SEEN]
        first_value[record.key] = record.value
    for code in {p.code for p in poison}:
        assert dead_lettered(metrics, code=code) == sum(1 for p in poison if p.code == code), code

    # `paygate dlq list` shows each of them with its code, reason and origin.
    listed = await asyncio.to_thread(_paygate, topics, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    dead_by_handle = {f"{r.partition}:{r.offset}": r for r in dead}
    assert sorted(e["handle"] for e in entries) == sorted(dead_by_handle)
    for entry in entries:
        record = dead_by_handle[entry["handle"]]
        kind, original = expected[record.key], originals[record.key]
        assert (entry["error_code"], entry["reason"]) == (kind.code, kind.reason)
        assert (entry["original_partition"], entry["original_offset"]) == (
            original.partition,
            original.offset,
        )
        assert entry["first_seen"] == first_seen[record.key]

    # Re-published, every kind, through the `paygate` executable.
    republished = await asyncio.to_thread(_paygate, topics, "dlq", "republish", "--all", "--json")
    assert republished.returncode == 0, republished.stderr
    done = [json.loads(line) for line in republished.stdout.splitlines()]
    assert sorted(d["from"] for d in done) == sorted(
        f"{topics.dlq_topic}:{handle}" for handle in dead_by_handle
    )
    assert {d["topic"] for d in done} == {topics.commands_topic}
    copies = _by_key(
        await read_until(bootstrap, topics.commands_topic, lambda rs: len(rs) >= 2 * len(poison))
    )
    from_handle = {d["from"]: d for d in done}

    # Still poison: the consumer (same group, so only the copies) dead-letters each again.
    async with running_consumer(topics, InProcessSandboxProvider()):
        again = await read_until(bootstrap, topics.dlq_topic, lambda rs: len(rs) >= 2 * len(poison))
    second = [r for r in again if HEADER_REPUBLISHED_FROM in _headers(r)]
    assert sorted(r.key for r in second) == sorted(expected)
    for record in second:
        kind, headers = expected[record.key], _headers(record)
        name = record.key.decode()
        [_, copy] = copies[record.key]
        # As first dead-lettered: a redacted dead letter comes back the same.
        assert record.value == first_value[record.key], name
        assert set(headers) == DLQ_HEADERS | {HEADER_REPUBLISHED_FROM, HEADER_REPUBLISHED_AT}
        assert (headers[HEADER_ERROR_CODE], headers[HEADER_REASON]) == (kind.code, kind.reason)
        # Where it failed this time: the re-published copy ...
        assert (int(headers[HEADER_PARTITION]), int(headers[HEADER_OFFSET])) == (
            copy.partition,
            copy.offset,
        ), name
        trail = from_handle[headers[HEADER_REPUBLISHED_FROM]]
        assert (trail["partition"], trail["offset"]) == (copy.partition, copy.offset), name
        # ... and when it was first seen failing: the first time, not now.
        assert headers[HEADER_FIRST_SEEN] == first_seen[record.key], name
