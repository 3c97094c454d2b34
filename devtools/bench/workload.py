"""Fresh topics per case and the commands pre-produced into them before the clock starts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from domain.accounts import Account, AccountType
from domain.money import Money
from domain.payments import CreatePayment, PaymentMethod
from domain.vaulted import AccountToken, AnyAccount
from paygate.database import engine_for
from paygate.kafka_security import kafka_client_options
from paygate.settings import Settings
from paygate.topics import ensure_topics
from paygate.vault_wiring import open_vault
from persistence.migrate import create_schema
from schemas.payments import PaymentMessages

log = logging.getLogger("devtools.bench")

# Sends awaited together: large enough for full producer batches, small enough that a
# broker problem surfaces within one request timeout rather than after all N sends.
_PRODUCE_CHUNK = 2_000
_SUCCESS_CARD = "4242424242424242"
_PAYEE_IBAN = "DE89370400440532013000"
_REQUESTED_AT = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class CaseTopics:
    """The topics and consumer group of one case; nothing is shared between cases."""

    commands: str
    results: str
    dlq: str
    group: str

    @classmethod
    def fresh(cls, run_id: str, case: str) -> CaseTopics:
        prefix = f"bench.{run_id}.{case}"
        return cls(
            commands=f"{prefix}.commands",
            results=f"{prefix}.results",
            dlq=f"{prefix}.commands.dlq",
            group=f"paygate-bench-{run_id}-{case}",
        )

    def settings(self, base: Settings, partitions: int) -> Settings:
        return base.model_copy(
            update={
                "commands_topic": self.commands,
                "results_topic": self.results,
                "dlq_topic": self.dlq,
                "consumer_group": self.group,
                "topic_partitions": partitions,
            }
        )


@contextlib.asynccontextmanager
async def created_topics(settings: Settings) -> AsyncIterator[None]:
    """Create the case's topics; delete them afterwards (a shared broker stays tidy)."""
    await ensure_topics(settings)
    try:
        yield
    finally:
        await _delete_topics(
            kafka_client_options(settings),
            [settings.commands_topic, settings.results_topic, settings.dlq_topic],
        )


async def _delete_topics(kafka: Mapping[str, object], names: list[str]) -> None:
    admin = AIOKafkaAdminClient(**kafka)
    try:
        await admin.start()
        await admin.delete_topics(names, timeout_ms=10_000)
    except Exception as exc:  # best effort: a leftover topic does not spoil the figures
        log.warning("could not delete bench topics %s: %s", names, exc)
    finally:
        await admin.close()


CLEAR_ACCOUNTS: Final = (
    Account(AccountType.CARD, _SUCCESS_CARD),
    Account(AccountType.IBAN, _PAYEE_IBAN),
)


def _command(order_id: str, accounts: tuple[AnyAccount, AnyAccount]) -> CreatePayment:
    return CreatePayment.create(
        idempotency_key=f"key-{order_id}",
        user_id="bench-user",
        order_id=order_id,
        amount=Money(1050, "EUR"),
        payment_method=PaymentMethod.CARD,
        payer=accounts[0],
        payee=accounts[1],
        requested_at=_REQUESTED_AT,
        metadata={"source": "bench"},
    )


Accounts = Sequence[tuple[AnyAccount, AnyAccount]]


async def vaulted_accounts(settings: Settings, count: int) -> Accounts:
    """``count`` payer and payee pairs put into the vault of ``settings``' database, each
    under tokens of its own (as ``count`` clients that tokenized first would have them):
    every lookup of case b-tokens reads a row of its own, none is answered by a shared one."""
    engine = engine_for(settings)
    try:
        await create_schema(engine)
        opened = await open_vault(settings, engine)
        try:
            vault = opened.vault

            async def pair() -> tuple[AnyAccount, AnyAccount]:
                payer = await vault.tokenize(CLEAR_ACCOUNTS[0], client_id=None, saved=True)
                payee = await vault.tokenize(CLEAR_ACCOUNTS[1], client_id=None, saved=True)
                return AccountToken(payer.type, payer.token), AccountToken(payee.type, payee.token)

            pairs: list[tuple[AnyAccount, AnyAccount]] = []
            for start in range(0, count, _PRODUCE_CHUNK):
                size = min(_PRODUCE_CHUNK, count - start)
                pairs += await asyncio.gather(*(pair() for _ in range(size)))
            return pairs
        finally:
            await opened.close()
    finally:
        await engine.dispose()


async def produce_commands(
    kafka: Mapping[str, object],
    topic: str,
    count: int,
    order_prefix: str,
    accounts: Accounts | None = None,
) -> None:
    """Produce ``count`` Avro commands keyed by unique order ids, in batches, and wait
    until the broker acknowledged all of them. Command ``i`` names ``accounts[i]``; without
    them, every command names the clear payer and payee."""
    await produce_encoded(kafka, topic, encoded_commands(count, order_prefix, accounts))


def encoded_commands(
    count: int, order_prefix: str, accounts: Accounts | None = None
) -> list[tuple[bytes, bytes]]:
    """``count`` Avro commands with unique order ids, as (key, value) pairs."""
    messages = PaymentMessages.bundled()
    encoded: list[tuple[bytes, bytes]] = []
    for i in range(count):
        order_id = f"{order_prefix}-{i:07d}"
        pair = CLEAR_ACCOUNTS if accounts is None else accounts[i]
        encoded.append((order_id.encode(), messages.encode_command(_command(order_id, pair))))
    return encoded


async def produce_encoded(
    kafka: Mapping[str, object], topic: str, encoded: list[tuple[bytes, bytes]]
) -> None:
    """Produce ``encoded`` (key, value) pairs in batches; wait until all are acknowledged."""
    producer = AIOKafkaProducer(**kafka, acks="all", linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    try:
        pending: list[asyncio.Future[object]] = []
        for key, value in encoded:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= _PRODUCE_CHUNK:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
