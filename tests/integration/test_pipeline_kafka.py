"""The consumer on a real broker: commands in, result events out, poison to the DLQ."""

from __future__ import annotations

import struct
from collections import Counter
from decimal import Decimal

import pytest

from consumer.dead_letter_redaction import mask_numbers_in
from consumer.dead_letters import (
    HEADER_ERROR_CODE,
    HEADER_FIRST_SEEN,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_TOPIC,
)
from domain.status import PaymentStatus
from persistence.engine import create_engine
from persistence.payment_store import PaymentStore
from providers.sandbox import InProcessSandboxProvider
from schemas.payments import PaymentMessages
from tests.support.builders import (
    DECLINED_CARD,
    SUCCESS_CARD,
    encoded_command,
)
from tests.support.clear_numbers import numbers_in
from tests.support.consumer_run import running_consumer
from tests.support.kafka_io import committed_total, produce, read_until
from tests.support.metric_samples import dead_lettered

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()


def _results(records):
    return [MESSAGES.decode_result(r.value) for r in records]


async def test_a_command_from_plain_aiokafka_comes_out_as_a_result_event(topics):
    key, value, record = encoded_command()
    declined_key, declined_value, declined = encoded_command(
        payerAccount={"type": "card", "number": DECLINED_CARD, "holderName": None}
    )
    await produce(
        topics.kafka_bootstrap_servers,
        topics.commands_topic,
        [(key, value), (declined_key, declined_value)],
    )
    provider = InProcessSandboxProvider()
    async with running_consumer(topics, provider):
        records = await read_until(
            topics.kafka_bootstrap_servers, topics.results_topic, lambda rs: len(rs) >= 2
        )
    by_order = {e.order_id: e for e in _results(records)}
    ok = by_order[record["orderId"]]
    assert ok.status is PaymentStatus.SUCCEEDED
    assert ok.payment_result is True
    assert ok.amount.to_decimal() == Decimal("10.50")
    assert ok.provider == "sandbox"
    bad = by_order[declined["orderId"]]
    assert bad.status is PaymentStatus.FAILED
    assert bad.error is not None
    assert bad.error.code.value == "payment_declined"
    # Keyed by order id, so every event of an order stays in order on one partition.
    assert {r.key for r in records} == {key, declined_key}


async def test_a_restarted_consumer_resumes_from_its_committed_offset(topics):
    bootstrap = topics.kafka_bootstrap_servers
    provider = InProcessSandboxProvider()
    first = [encoded_command() for _ in range(10)]
    second = [encoded_command() for _ in range(10)]

    await produce(bootstrap, topics.commands_topic, [(k, v) for k, v, _ in first])
    async with running_consumer(topics, provider) as metrics:
        await read_until(bootstrap, topics.results_topic, lambda rs: len(rs) >= 10)
    assert metrics.commands_consumed.labels("payment", "succeeded")._value.get() == 10
    assert await committed_total(bootstrap, topics.consumer_group, topics.commands_topic) == 10

    # Produced while no consumer runs: must be picked up, and nothing handled twice.
    await produce(bootstrap, topics.commands_topic, [(k, v) for k, v, _ in second])
    async with running_consumer(topics, provider) as metrics:
        records = await read_until(bootstrap, topics.results_topic, lambda rs: len(rs) >= 20)
    assert metrics.commands_consumed.labels("payment", "succeeded")._value.get() == 10
    assert metrics.commands_consumed.labels("payment", "replayed")._value.get() == 0
    assert await committed_total(bootstrap, topics.consumer_group, topics.commands_topic) == 20

    orders = Counter(e.order_id for e in _results(records))
    assert set(orders) == {r["orderId"] for _, _, r in first + second}
    assert set(orders.values()) == {1}
    charges = await provider.acquirer.charges()
    assert len(charges) == 20

    engine = create_engine(topics.database_url)
    try:
        store = PaymentStore(engine)
        for _, _, record in first + second:
            events = [e for e in _results(records) if e.order_id == record["orderId"]]
            payment = await store.get_payment(events[0].payment_request_id)
            assert payment is not None
            assert payment.status is PaymentStatus.SUCCEEDED
    finally:
        await engine.dispose()


_UNDECODABLE = frozenset({"not-wire-format", "empty", "truncated", "unknown-schema"})


def _poison() -> dict[str, tuple[bytes, str, str]]:
    """name -> (message bytes, expected error code, expected reason)."""
    _, valid, _ = encoded_command()
    _, negative, _ = encoded_command(amount=Decimal("-5.00"))
    _, unknown_currency, _ = encoded_command(currency="XYZ")
    _, too_precise, _ = encoded_command(amount=Decimal("1.001"))
    return {
        "not-wire-format": (b'{"orderId": "o-1"}', "malformed_message", "bad_magic_byte"),
        "empty": (b"", "malformed_message", "truncated_header"),
        "truncated": (valid[:20], "malformed_message", "truncated_body"),
        "unknown-schema": (
            b"\x00" + struct.pack(">I", 4242) + valid[5:],
            "unknown_schema",
            "unknown_id",
        ),
        "negative-amount": (negative, "invalid_amount", "invalid_value:amount"),
        "unknown-currency": (unknown_currency, "unsupported_currency", "invalid_value:currency"),
        "too-many-decimals": (too_precise, "invalid_amount", "invalid_value:amount"),
    }


async def test_each_poison_kind_goes_to_the_dlq_and_the_consumer_keeps_going(topics):
    bootstrap = topics.kafka_bootstrap_servers
    poison = _poison()
    _good_key, good_value, good = encoded_command(
        payerAccount={"type": "card", "number": SUCCESS_CARD, "holderName": None}
    )
    # One key for all, so they share a partition and the good one comes after the poison.
    key = b"order-poison"
    await produce(
        bootstrap,
        topics.commands_topic,
        [(key, value) for value, _, _ in poison.values()] + [(key, good_value)],
    )
    async with running_consumer(topics, InProcessSandboxProvider()) as metrics:
        dead = await read_until(bootstrap, topics.dlq_topic, lambda rs: len(rs) >= len(poison))
        results = await read_until(bootstrap, topics.results_topic, lambda rs: len(rs) >= 1)
    assert _results(results)[0].order_id == good["orderId"]

    assert len(dead) == len(poison)
    for record, (name, (value, code, reason)) in zip(dead, poison.items(), strict=True):
        headers = {k: v.decode() for k, v in record.headers}
        if numbers_in(value):
            # Redacted (tokenized, or masked where it does not decode): never a clear number.
            assert numbers_in(record.value) == [], name
        elif name in _UNDECODABLE:
            # Every long digit run is masked, whatever it is: the truncated command's random
            # idempotency key sometimes holds eight digits in a row.
            assert record.value == mask_numbers_in(value), name
        else:
            assert record.value == value, name
        assert headers[HEADER_ERROR_CODE] == code, name
        assert headers[HEADER_REASON] == reason, name
        assert headers[HEADER_TOPIC] == topics.commands_topic
        assert int(headers[HEADER_PARTITION]) >= 0
        assert int(headers[HEADER_OFFSET]) >= 0
        assert headers[HEADER_FIRST_SEEN]
        assert SUCCESS_CARD not in "".join(headers.values())
    assert sum(
        dead_lettered(metrics, code=code)
        for code in {
            "malformed_message",
            "unknown_schema",
            "invalid_amount",
            "unsupported_currency",
        }
    ) == len(poison)
    # Everything, poison included, is committed: a restart would not see it again.
    assert (
        await committed_total(bootstrap, topics.consumer_group, topics.commands_topic)
        == len(poison) + 1
    )
