"""`paygate dlq` on a real broker: list dead letters, re-publish them, and what follows."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from decimal import Decimal

import pytest

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
from domain.status import PaymentStatus
from paygate.dlq import HEADER_REPUBLISHED_AT, HEADER_REPUBLISHED_FROM, main
from paygate.dlq.entries import read_dead_letters
from paygate.settings import Settings
from providers.sandbox import InProcessSandboxProvider
from schemas.payments import PaymentMessages
from tests.support.builders import SUCCESS_CARD, encoded_command
from tests.support.consumer_run import running_consumer
from tests.support.kafka_io import produce, read_until

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()


def _unknown_schema(value: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", 4242) + value[5:]


@pytest.fixture
def dlq_env(topics: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The command reads its settings from the environment, as it would in production."""
    assert topics.kafka_bootstrap_servers
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", topics.kafka_bootstrap_servers)
    monkeypatch.setenv("PAYGATE_COMMANDS_TOPIC", topics.commands_topic)
    monkeypatch.setenv("PAYGATE_DLQ_TOPIC", topics.dlq_topic)
    return topics


async def dlq(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``main(args)`` in-process (in a thread: it runs its own event loop)."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def listed(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    code, out, err = await dlq(capsys, "list", "--json")
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


async def dead_letter_through_consumer(
    settings: Settings, messages: list[tuple[bytes, bytes]]
) -> list:
    """Run real poison messages through the consumer; return the DLQ records."""
    bootstrap = settings.kafka_bootstrap_servers
    assert bootstrap
    await produce(bootstrap, settings.commands_topic, messages)
    async with running_consumer(settings, InProcessSandboxProvider()):
        return await read_until(bootstrap, settings.dlq_topic, lambda rs: len(rs) >= len(messages))


def _dlq_headers(*, code: str, reason: str, topic: str, offset: int) -> list[tuple[str, bytes]]:
    return [
        (HEADER_ERROR_CODE, code.encode()),
        (HEADER_REASON, reason.encode()),
        (HEADER_MESSAGE, b"schema id 4242 is not known"),
        (HEADER_TOPIC, topic.encode()),
        (HEADER_PARTITION, b"0"),
        (HEADER_OFFSET, str(offset).encode()),
        (HEADER_FIRST_SEEN, b"2026-11-26T12:00:00+00:00"),
    ]


async def _produce_with_headers(
    bootstrap: str, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def test_list_shows_each_dead_letter_with_its_code_and_never_the_value(dlq_env, capsys):
    key = b"order-dlq-list"
    _, valid, _ = encoded_command()
    _, negative, _ = encoded_command(amount=Decimal("-5.00"))  # holds the card number in its value
    assert SUCCESS_CARD.encode() in negative
    poison = [(key, _unknown_schema(valid)), (key, negative), (key, b'{"orderId": "o-1"}')]
    dead = await dead_letter_through_consumer(dlq_env, poison)

    entries = await listed(capsys)
    assert [e["error_code"] for e in entries] == [
        "unknown_schema",
        "invalid_amount",
        "malformed_message",
    ]
    assert [e["reason"] for e in entries] == [
        "unknown_id",
        "invalid_value:amount",
        "bad_magic_byte",
    ]
    for entry, record in zip(entries, dead, strict=True):
        assert entry["handle"] == f"{record.partition}:{record.offset}"
        assert (entry["dlq_partition"], entry["dlq_offset"]) == (record.partition, record.offset)
        assert entry["original_topic"] == dlq_env.commands_topic
        assert entry["original_partition"] >= 0
        assert entry["original_offset"] >= 0
        assert entry["first_seen"]
        assert entry["message"]
        # The dead letter's own size: a clear number in it was redacted (tokenized, or masked
        # where the value does not decode), so it can differ from the original's.
        assert entry["value_size"] == len(record.value)
        assert SUCCESS_CARD.encode() not in record.value
        assert entry["key"] == key.decode()

    code, out, _ = await dlq(capsys, "list")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"{dead[0].partition}:{dead[0].offset} code=unknown_schema ")
    assert "code=invalid_amount reason=invalid_value:amount" in lines[1]
    assert f"original={dlq_env.commands_topic}:" in lines[2]
    assert f"size={len(dead[1].value)}" in lines[1]
    for text in (out, json.dumps(entries)):
        assert SUCCESS_CARD not in text
        assert "orderId" not in text  # the third value's bytes
        assert negative.hex() not in text

    code, out, _ = await dlq(capsys, "list", "--limit", "1")
    assert code == 0
    assert len(out.splitlines()) == 1
    code, out, _ = await dlq(capsys, "list", "--json", "--code", "invalid_amount")
    assert code == 0
    assert [json.loads(line)["error_code"] for line in out.splitlines()] == ["invalid_amount"]


async def test_a_republished_poison_message_goes_to_the_dlq_again(dlq_env, capsys):
    bootstrap = dlq_env.kafka_bootstrap_servers
    key = b"order-dlq-again"
    _, valid, _ = encoded_command()
    poison = _unknown_schema(valid)
    await dead_letter_through_consumer(dlq_env, [(key, poison)])
    [entry] = await listed(capsys)
    handle = entry["handle"]

    code, out, err = await dlq(capsys, "republish", "--offsets", handle, "--json")
    assert code == 0, err
    [done] = [json.loads(line) for line in out.splitlines()]
    assert done["from"] == f"{dlq_env.dlq_topic}:{handle}"
    assert done["topic"] == dlq_env.commands_topic
    assert poison.hex() not in out

    # The command topic now holds the original and the re-published copy: same key, the
    # value as dead-lettered (its numbers masked: it does not decode), plus two headers.
    commands = await read_until(bootstrap, dlq_env.commands_topic, lambda rs: len(rs) >= 2)
    [again] = [r for r in commands if r.headers]
    assert (again.partition, again.offset) == (done["partition"], done["offset"])
    assert again.key == key
    assert again.value == mask_numbers_in(poison)
    assert SUCCESS_CARD.encode() not in again.value
    headers = {k: v.decode() for k, v in again.headers}
    assert headers[HEADER_REPUBLISHED_FROM] == f"{dlq_env.dlq_topic}:{handle}"
    assert headers[HEADER_REPUBLISHED_AT]

    # Still invalid: the consumer (same group, so only the new message) dead-letters it
    # again, and the new entry points at the re-published copy.
    async with running_consumer(dlq_env, InProcessSandboxProvider()):
        await read_until(bootstrap, dlq_env.dlq_topic, lambda rs: len(rs) >= 2)
    entries = await listed(capsys)
    assert len(entries) == 2
    newest = next(e for e in entries if e["handle"] != handle)
    assert newest["error_code"] == "unknown_schema"
    assert newest["reason"] == "unknown_id"
    assert newest["original_topic"] == dlq_env.commands_topic
    assert (newest["original_partition"], newest["original_offset"]) == (
        done["partition"],
        done["offset"],
    )
    assert newest["value_size"] == len(poison)
    # The new entry carries the trail and the time the message first failed.
    dead = await read_until(bootstrap, dlq_env.dlq_topic, lambda rs: len(rs) >= 2)
    first_headers, second_headers = ({k: v.decode() for k, v in r.headers} for r in dead)
    assert second_headers[HEADER_REPUBLISHED_FROM] == f"{dlq_env.dlq_topic}:{handle}"
    assert second_headers[HEADER_FIRST_SEEN] == first_headers[HEADER_FIRST_SEEN]


async def test_a_fixed_command_republished_from_the_dlq_is_processed_once(dlq_env, capsys):
    bootstrap = dlq_env.kafka_bootstrap_servers
    assert bootstrap
    key, value, record = encoded_command()
    # As if dead-lettered for an unknown schema that has since been registered.
    await _produce_with_headers(
        bootstrap,
        dlq_env.dlq_topic,
        key,
        value,
        _dlq_headers(
            code="unknown_schema", reason="unknown_id", topic=dlq_env.commands_topic, offset=7
        ),
    )
    [entry] = await listed(capsys)
    assert entry["error_code"] == "unknown_schema"

    code, out, err = await dlq(capsys, "republish", "--code", "unknown_schema", "--to-original")
    assert code == 0, err
    assert out.startswith(f"republished {entry['handle']} code=unknown_schema ")
    assert f"-> {dlq_env.commands_topic}:" in out
    # Re-published a second time by mistake: the same idempotency key, so the same payment.
    code, _, err = await dlq(capsys, "republish", "--all")
    assert code == 0, err

    provider = InProcessSandboxProvider()
    async with running_consumer(dlq_env, provider) as metrics:
        results = await read_until(bootstrap, dlq_env.results_topic, lambda rs: len(rs) >= 2)
    events = [MESSAGES.decode_result(r.value) for r in results]
    assert {e.order_id for e in events} == {record["orderId"]}
    assert {e.status for e in events} == {PaymentStatus.SUCCEEDED}
    assert len({e.payment_request_id for e in events}) == 1
    assert len(await provider.acquirer.charges()) == 1
    assert metrics.commands_consumed.labels("payment", "succeeded")._value.get() == 1
    assert metrics.commands_consumed.labels("payment", "replayed")._value.get() == 1
    # The DLQ keeps its entry: Kafka cannot delete single messages.
    assert len(await listed(capsys)) == 1


async def test_unknown_offsets_and_bad_arguments_exit_2_and_send_nothing(dlq_env, capsys):
    bootstrap = dlq_env.kafka_bootstrap_servers
    assert bootstrap
    key, value, _ = encoded_command()
    await _produce_with_headers(
        bootstrap,
        dlq_env.dlq_topic,
        key,
        value,
        _dlq_headers(
            code="unknown_schema", reason="unknown_id", topic=dlq_env.commands_topic, offset=0
        ),
    )
    [entry] = await listed(capsys)

    code, out, err = await dlq(capsys, "republish", "--offsets", f"{entry['handle']},0:999")
    assert code == 2
    assert out == ""
    assert "0:999" in err
    assert "nothing was re-published" in err
    for args in (
        ["republish"],
        ["republish", "--offsets", "0-1"],
        ["republish", "--all", "--code", "unknown_schema"],
        ["republish", "--code", "no_such_code"],
        ["list", "--limit", "0"],
        ["purge"],
    ):
        code, out, _ = await dlq(capsys, *args)
        assert code == 2, args
        assert out == ""
    code, out, err = await dlq(capsys, "republish", "--all", "--dry-run")
    assert code == 0, err
    assert out.startswith(f"would republish {entry['handle']} ")
    # Nothing reached the command topic (read up to its end offsets, like `list` does).
    assert await read_dead_letters({"bootstrap_servers": bootstrap}, dlq_env.commands_topic) == []


async def test_no_kafka_or_no_topic_exits_2(dlq_env, capsys, monkeypatch):
    monkeypatch.setenv("PAYGATE_DLQ_TOPIC", "payments.commands.dlq.missing-topic")
    code, out, err = await dlq(capsys, "list")
    assert (code, out) == (2, "")
    assert "does not exist" in err

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{closed_port}")
    code, out, err = await dlq(capsys, "list")
    assert (code, out) == (2, "")
    assert f"127.0.0.1:{closed_port}" in err

    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS")
    monkeypatch.delenv("PAYGATE_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    code, out, err = await dlq(capsys, "republish", "--all")
    assert (code, out) == (2, "")
    assert "KAFKA_BOOTSTRAP_SERVERS is not set" in err
