"""No command stalls its partition: a real broker, on SQLite and on PostgreSQL.

* Commands whose text breaks the text rule (a NUL in a refund's or a capture's orderId, a
  control character in a metadata value or a user id) or a length limit are dead-lettered at
  decode with their code, and a good command behind them on the same partition is processed
  and committed. On PostgreSQL such a NUL used to fail every statement, for ever.
* Handling that fails in the real database: a value it refuses is dead-lettered at once,
  an error nobody foresaw after the bounded number of tries, and both let the offset pass.
* The verdicts on the real drivers' exceptions: what the database refuses, what is a
  database that is down, what nobody can tell.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from sqlalchemy import Column, MetaData, String, Table, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.dead_letters import HEADER_ERROR_CODE, HEADER_OFFSET, HEADER_REASON, DeadLetterRouter
from consumer.failures import FailureKind, classify
from consumer.runner import CommandRunner
from domain.payments import CreatePayment, payment_request_id_for
from domain.status import PaymentStatus
from paygate.settings import Settings
from persistence.engine import create_engine
from persistence.payment_store import PaymentStore
from producer.kafka_producer import KafkaProducer
from providers.sandbox import InProcessSandboxProvider
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import (
    SUCCESS_CARD,
    encoded_capture,
    encoded_command,
    encoded_refund,
    unique,
)
from tests.support.clear_numbers import numbers_in
from tests.support.consumer_run import running_consumer
from tests.support.kafka_io import committed_total, produce, read_until, wait_for
from tests.support.metric_samples import dead_lettered

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
KEY = b"order-shared-partition"  # one key: one partition, in this order


@dataclass(frozen=True)
class Poison:
    name: str
    value: bytes
    code: str
    reason: str


def _payment(**changes: Any) -> bytes:
    return encoded_command(**changes)[1]


def _account(**changes: Any) -> dict[str, Any]:
    return {"type": "card", "number": SUCCESS_CARD, "holderName": None, **changes}


def _bad_text() -> list[Poison]:
    kinds = {
        "refund-nul-order": (encoded_refund(orderId="order\x00"), "invalid_text", "orderId"),
        "capture-nul-order": (encoded_capture(orderId="\x00order"), "invalid_text", "orderId"),
        "create-metadata-control": (
            _payment(metadata={"note": "ring \x07"}),
            "invalid_text",
            "metadata.note",
        ),
        "create-user-id-control": (_payment(userId="user\x1b[0m"), "invalid_text", "userId"),
        "create-holder-c1": (
            _payment(payerAccount=_account(holderName="Ada\x85")),
            "invalid_text",
            "payerAccount.holderName",
        ),
        "refund-long-order": (encoded_refund(orderId="o" * 65), "invalid_request", "orderId"),
        "capture-long-order": (encoded_capture(orderId="o" * 65), "invalid_request", "orderId"),
        "create-long-metadata": (
            _payment(metadata={"note": "x" * 501}),
            "invalid_request",
            "metadata.note",
        ),
        "create-long-holder": (
            _payment(payerAccount=_account(holderName="A" * 141)),
            "invalid_request",
            "payerAccount.holderName",
        ),
    }
    return [
        Poison(name, value, code, f"invalid_value:{param}")
        for name, (value, code, param) in kinds.items()
    ]


def _headers(record: ConsumerRecord) -> dict[str, str]:
    return {key: value.decode() for key, value in record.headers}


async def test_bad_text_is_dead_lettered_at_once_and_the_command_behind_it_is_processed(
    topics: Settings, database_url: str
) -> None:
    settings = topics.model_copy(update={"database_url": database_url})
    bootstrap = settings.kafka_bootstrap_servers
    assert bootstrap
    poison = _bad_text()
    _key, good_value, good = encoded_command()
    await produce(
        bootstrap, settings.commands_topic, [(KEY, p.value) for p in poison] + [(KEY, good_value)]
    )

    async with running_consumer(settings, InProcessSandboxProvider()) as metrics:
        dead = await read_until(bootstrap, settings.dlq_topic, lambda rs: len(rs) >= len(poison))
        results = await read_until(bootstrap, settings.results_topic, lambda rs: len(rs) >= 1)

    assert len(dead) == len(poison)
    for record, kind in zip(dead, poison, strict=True):  # one partition: in their order
        headers = _headers(record)
        if numbers_in(kind.value):
            # A clear number never reaches the dead-letter topic: tokenized (it decodes).
            assert numbers_in(record.value) == [], kind.name
        else:
            assert record.value == kind.value, kind.name
        assert (headers[HEADER_ERROR_CODE], headers[HEADER_REASON]) == (kind.code, kind.reason)
    offsets = [int(_headers(record)[HEADER_OFFSET]) for record in dead]
    assert offsets == sorted(offsets)
    assert dead_lettered(metrics, code="invalid_text", reason="invalid_value") == 5
    assert dead_lettered(metrics, code="invalid_request", reason="invalid_value") == 4

    # The good command behind them was processed, and the committed offset passed them all.
    [result] = [MESSAGES.decode_any_result(r.value) for r in results]
    payment_id = payment_request_id_for(good["orderId"], good["idempotencyKey"])
    assert result.payment_request_id == payment_id
    engine = create_engine(database_url)
    try:
        stored = await PaymentStore(engine).get_payment(payment_id)
    finally:
        await engine.dispose()
    assert stored is not None
    assert stored.status is PaymentStatus.SUCCEEDED
    assert await committed_total(bootstrap, settings.consumer_group, settings.commands_topic) == (
        len(poison) + 1
    )


# --- failures in the real database, through the real runner -------------------------------

PROBES = Table("bounded_retry_probes", MetaData(), Column("order_id", String(64), primary_key=True))
ATTEMPTS = 3


class ProbeHandler:
    """Stands in for the command handlers: writes each order id to a probe table.

    Metadata steers the write: ``{"probe": "nul"}`` appends a NUL (PostgreSQL refuses it);
    an order id written before the run breaks the primary key on every try.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.tries: Counter[str] = Counter()

    async def handle(self, command: object) -> None:
        assert isinstance(command, CreatePayment)
        self.tries[command.order_id] += 1
        value = command.order_id + ("\x00" if command.metadata.get("probe") == "nul" else "")
        async with self.engine.begin() as conn:
            await conn.execute(PROBES.insert().values(order_id=value))


@asynccontextmanager
async def _running_runner(
    settings: Settings, handler: ProbeHandler, metrics: Metrics
) -> AsyncIterator[None]:
    bootstrap = settings.require_kafka()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    async with KafkaProducer({"bootstrap_servers": bootstrap}) as producer:
        await consumer.start()
        runner = CommandRunner(
            consumer=consumer,
            topic=settings.commands_topic,
            messages=MESSAGES,
            handler=handler,
            dead_letters=DeadLetterRouter(producer, settings.dlq_topic, metrics),
            metrics=metrics,
            max_retry_backoff_s=0.2,
            max_handling_attempts=ATTEMPTS,
        )
        task = asyncio.create_task(runner.run())
        try:
            yield
        finally:
            runner.stop()
            await asyncio.wait_for(task, 60)
            await consumer.stop()


async def test_failures_in_the_database_are_dead_lettered_within_their_bound(
    topics: Settings, engine: AsyncEngine
) -> None:
    bootstrap = topics.require_kafka()
    postgres = engine.dialect.name == "postgresql"
    async with engine.begin() as conn:
        await conn.run_sync(PROBES.metadata.create_all)
        await conn.execute(PROBES.insert().values(order_id="taken"))
    taken = encoded_command(orderId="taken")[1]
    nul = encoded_command(orderId=unique("nul"), metadata={"probe": "nul"})
    good = encoded_command(orderId=unique("good"))
    await produce(bootstrap, topics.commands_topic, [(KEY, taken), (KEY, nul[1]), (KEY, good[1])])
    # SQLite stores a NUL as it is: there, only the broken key is a dead letter.
    expected = [("internal_error", "retries_exhausted")]
    if postgres:
        expected.append(("invalid_request", "database_refused"))

    handler, metrics = ProbeHandler(engine), Metrics()
    async with _running_runner(topics, handler, metrics):
        dead = await read_until(bootstrap, topics.dlq_topic, lambda rs: len(rs) >= len(expected))
        # Once it has started, stopping the runner lets it finish and commits it.
        await wait_for(lambda: handler.tries[good[2]["orderId"]] > 0)

    assert [(_headers(r)[HEADER_ERROR_CODE], _headers(r)[HEADER_REASON]) for r in dead] == expected
    assert handler.tries["taken"] == ATTEMPTS
    assert handler.tries[nul[2]["orderId"]] == 1
    assert handler.tries[good[2]["orderId"]] == 1
    assert dead_lettered(metrics, reason="retries_exhausted") == 1
    async with engine.connect() as conn:
        written = set((await conn.execute(PROBES.select())).scalars())
    assert good[2]["orderId"] in written
    assert await committed_total(bootstrap, topics.consumer_group, topics.commands_topic) == 3


# --- the verdicts on the drivers' own exceptions --------------------------------------------


async def _error_of(engine: AsyncEngine, statement: str, **params: Any) -> BaseException:
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement), params)
    except Exception as exc:
        return exc
    raise AssertionError(f"{statement} did not fail")


async def test_real_database_errors_get_their_verdicts(engine: AsyncEngine, tmp_path: Path) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(PROBES.metadata.create_all)
        await conn.execute(PROBES.insert().values(order_id="taken"))
    insert = "INSERT INTO bounded_retry_probes (order_id) VALUES (:v)"

    duplicate = await _error_of(engine, insert, v="taken")
    assert classify(duplicate).kind is FailureKind.UNKNOWN  # a lost race resolves on a retry
    missing = await _error_of(engine, "SELECT * FROM no_such_table")
    assert classify(missing).kind is FailureKind.TRANSIENT  # a deployment fault: stall

    if engine.dialect.name == "postgresql":
        nul = classify(await _error_of(engine, insert, v="order\x00"))
        assert (nul.kind, nul.reason) == (FailureKind.PERMANENT, "database_refused")
        assert "SQLSTATE 22021" in nul.message
        long = classify(await _error_of(engine, insert, v="o" * 65))
        assert (long.kind, long.reason) == (FailureKind.PERMANENT, "database_refused")
        assert "SQLSTATE 22001" in long.message
        # asyncpg refuses to encode it before sending: no SQLSTATE, its own DataError.
        wrong_type = classify(await _error_of(engine, insert, v=5))
        assert (wrong_type.kind, wrong_type.reason) == (FailureKind.PERMANENT, "database_refused")
        unreachable = engine.url.set(host="127.0.0.1", port=1)
    else:
        unreachable = make_url(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'x.db'}")
    down = create_engine(unreachable.render_as_string(hide_password=False))
    try:
        error = await _error_of(down, "SELECT 1")
    finally:
        await down.dispose()
    assert classify(error).kind is FailureKind.TRANSIENT
