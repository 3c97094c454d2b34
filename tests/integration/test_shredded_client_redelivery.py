"""A command of a shredded client redelivered after its payment began is answered as a
replay; one whose payment did not begin is refused (``client_shredded``), on SQLite and
PostgreSQL, and through a real broker.

Kafka delivers at least once: a consumer that stops before committing an offset leaves its
commands to be delivered again, perhaps after ``paygate keys shred-client`` closed the
client's vault. The intake vaults a command's clear (or encrypted) numbers under new tokens
whose rows are written with the payment's begin. A begin that finds the payment already
begun writes none of them: they would name nothing, and a shredded client's would be
refused, dead-lettering a command whose payment exists instead of saying where it stands.
A begin that makes a new payment writes them first, and that write is the shred check:
the replay path is no way around it, nor a way to store a card.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.account_intake import AccountIntake, AdmittedPayments
from consumer.dead_letters import HEADER_ERROR_CODE
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from domain.accounts import Account, AccountType
from domain.errors import ErrorCode, PaygateError
from domain.payments import CreatePayment
from domain.status import PaymentStatus
from paygate.settings import Settings
from paygate.vault_wiring import open_vault
from persistence.engine import create_engine
from persistence.group_commit import GroupCommit
from persistence.migrate import create_schema
from persistence.payment_begin import Existing, Started
from persistence.payment_store import PaymentStore
from persistence.tables import outbox, payments
from persistence.vault_tables import vault_entries
from providers.port import ChargeOutcome, ChargeRequest
from providers.registry import Providers
from providers.routing import Router
from providers.sandbox import InProcessSandboxProvider
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import ACCOUNT_KEY, SUCCESS_CARD, create_payment, unexpected_refusal
from tests.support.clock import Clock
from tests.support.consumer_run import running_consumer
from tests.support.kafka_io import committed_total, produce, read_until
from tests.support.vault_keys import KEK_1
from vault.kek import LocalKeyEncryptionKeys
from vault.rows import VaultRows
from vault.vault import Vault

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
CARD = Account(AccountType.CARD, SUCCESS_CARD)
RETENTION = timedelta(days=30)


class RecordingSandbox(InProcessSandboxProvider):
    """The sandbox, remembering which payments reached it with a charge."""

    def __init__(self) -> None:
        super().__init__()
        self.charged: list[str] = []

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        self.charged.append(request.payment_request_id)
        return await super().charge(request)


def _client() -> str:
    return f"client-{uuid.uuid4().hex[:8]}"


def _of(client: str) -> CreatePayment:
    """A command with clear numbers (tokens made by the intake, written with the begin)."""
    return dataclasses.replace(create_payment(), client_id=client)


async def _tokens_of(engine: AsyncEngine, client_id: str) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count()).where(vault_entries.c.client_id == client_id)
        )
    return int(count or 0)


async def _events_of(engine: AsyncEngine, payment_id: str) -> list[str]:
    """The event ids of the payment's result events in the outbox, oldest first."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(outbox.c.payload).order_by(outbox.c.id))).all()
    events = [MESSAGES.decode_result(row.payload) for row in rows]
    return [e.event_id for e in events if e.payment_request_id == payment_id]


class _Consumer:
    """The consumer's payment path as the service wires it: intake, then handler, over one
    database's writer queue."""

    def __init__(self, engine: AsyncEngine, clock: Clock, provider: RecordingSandbox) -> None:
        writes = GroupCommit(engine)
        self.store = PaymentStore(engine, clock, writes=writes)
        self.vault = Vault(
            VaultRows(engine, writes), LocalKeyEncryptionKeys.from_text(KEK_1), ACCOUNT_KEY
        )
        handler = PaymentCommandHandler(
            store=self.store,
            providers=Providers.of(provider),
            router=Router.catch_all(provider.name),
            events=PaymentEvents(MESSAGES, "payments.results"),
            account_key=ACCOUNT_KEY,
            metrics=Metrics(),
            clock=clock,
            vault=self.vault,
        )
        self.intake = AccountIntake(
            self.vault, _NoDecrypter(), accept_clear=True, retention=RETENTION
        )
        self.payments = AdmittedPayments(self.intake, handler)


class _NoDecrypter:
    def decrypt(self, account: object) -> Account:
        raise AssertionError("no encrypted account in these commands")


async def test_a_redelivery_of_a_finished_payment_after_the_shred_is_replayed(
    engine: AsyncEngine, clock: Clock
) -> None:
    provider = RecordingSandbox()
    consumer = _Consumer(engine, clock, provider)
    client = _client()
    command = _of(client)
    assert await consumer.payments.handle(command) is Outcome.SUCCEEDED
    assert await _tokens_of(engine, client) == 2  # the payer's and the payee's
    first_events = await _events_of(engine, command.payment_request_id)
    assert len(first_events) == 1

    assert await consumer.vault.delete_client(client) == 2
    # Redelivered: re-published as any replay (the same event id), no token stored.
    assert await consumer.payments.handle(command) is Outcome.REPLAYED
    assert await _events_of(engine, command.payment_request_id) == first_events * 2
    assert await _tokens_of(engine, client) == 0
    assert provider.charged == [command.payment_request_id]

    # A new payment of the client is still refused, storing nothing.
    other = _of(client)
    with pytest.raises(PaygateError) as refused:
        await consumer.payments.handle(other)
    assert refused.value.code is ErrorCode.CLIENT_SHREDDED
    assert await _tokens_of(engine, client) == 0
    assert await consumer.store.get_payment(other.payment_request_id) is None
    assert provider.charged == [command.payment_request_id]


async def test_a_redelivery_of_a_payment_in_doubt_after_the_shred_sends_nothing(
    engine: AsyncEngine, clock: Clock
) -> None:
    # The first delivery's worker stopped after its write-ahead, before its provider call:
    # the payment began, its attempt open, its tokens stored with its begin. Then the client
    # is shredded, and the command redelivered once the claim has run out.
    provider = RecordingSandbox()
    consumer = _Consumer(engine, clock, provider)
    client = _client()
    command = _of(client)
    admitted, along = await consumer.intake.admit_along(command)
    begun = await consumer.store.begin(
        admitted,
        provider=provider.name,
        account_key=ACCOUNT_KEY,
        refusal_event=unexpected_refusal,
        along=along,
    )
    assert isinstance(begun, Started)
    assert await consumer.vault.delete_client(client) == 2
    clock.now += timedelta(minutes=1)  # past the first worker's claim

    # Taken over and asked of the provider (no record), then re-sent from the command sealed
    # into the attempt, whose tokens the shred deleted: nothing is sent, and the payment is
    # left pending for the reconciler, never failed on a guess.
    assert await consumer.payments.handle(command) is Outcome.PENDING
    assert provider.charged == []
    assert await _tokens_of(engine, client) == 0
    payment = await consumer.store.get_payment(command.payment_request_id)
    assert payment is not None
    assert payment.status is PaymentStatus.PROCESSING


async def test_a_batch_of_a_redelivery_and_a_new_payment_of_a_shredded_client(
    engine: AsyncEngine, clock: Clock
) -> None:
    # Both begins in one writer-queue transaction (PaymentStore.begin queues at once): the
    # new payment's token write refuses it and fails the batch, run again one by one.
    provider = RecordingSandbox()
    consumer = _Consumer(engine, clock, provider)
    client = _client()
    began = _of(client)
    assert await consumer.payments.handle(began) is Outcome.SUCCEEDED
    assert await consumer.vault.delete_client(client) == 2
    fresh = _of(client)
    admitted = [await consumer.intake.admit_along(c) for c in (began, fresh)]

    answers = await asyncio.gather(
        *(
            consumer.store.begin(
                command,
                provider=provider.name,
                account_key=ACCOUNT_KEY,
                refusal_event=unexpected_refusal,
                along=along,
            )
            for command, along in admitted
        ),
        return_exceptions=True,
    )

    replayed, refused = answers
    assert isinstance(replayed, Existing)
    assert replayed.same_parameters
    assert replayed.payment.status is PaymentStatus.SUCCEEDED
    assert isinstance(refused, PaygateError)
    assert refused.code is ErrorCode.CLIENT_SHREDDED
    assert await _tokens_of(engine, client) == 0
    async with engine.connect() as conn:
        ids = set(await conn.scalars(select(payments.c.id).where(payments.c.client_id == client)))
    assert ids == {began.payment_request_id}


async def test_a_shredded_clients_redelivery_on_kafka_is_replayed_and_a_new_one_dead_lettered(
    topics: Settings, database_url: str
) -> None:
    settings = topics.model_copy(update={"database_url": database_url})
    bootstrap = settings.kafka_bootstrap_servers
    assert bootstrap
    client = _client()
    began, fresh = _of(client), _of(client)
    engine = create_engine(settings.database_url)
    await create_schema(engine)
    opened = await open_vault(settings, engine)
    provider = RecordingSandbox()
    try:
        async with running_consumer(settings, provider):
            await produce(
                bootstrap, settings.commands_topic, [(began.order_id.encode(), _encoded(began))]
            )
            await read_until(bootstrap, settings.results_topic, lambda rs: len(rs) >= 1)
            assert await _tokens_of(engine, client) == 2
            assert await opened.vault.delete_client(client) == 2
            # The same command again (a redelivery), and a new one of the client.
            await produce(
                bootstrap,
                settings.commands_topic,
                [(c.order_id.encode(), _encoded(c)) for c in (began, fresh)],
            )
            await _until_committed(bootstrap, settings, 3)
            results = await read_until(bootstrap, settings.results_topic, lambda rs: len(rs) >= 2)
            dead = await read_until(bootstrap, settings.dlq_topic, lambda rs: len(rs) >= 1)
        tokens_left = await _tokens_of(engine, client)
    finally:
        await opened.close()
        await engine.dispose()

    events = [MESSAGES.decode_result(r.value) for r in results]
    assert [(e.payment_request_id, e.status) for e in events] == [
        (began.payment_request_id, PaymentStatus.SUCCEEDED)
    ] * 2
    assert events[0].event_id == events[1].event_id  # re-published, not a new outcome
    assert [(r.key, dict(r.headers)[HEADER_ERROR_CODE]) for r in dead] == [
        (fresh.order_id.encode(), b"client_shredded")
    ]
    assert provider.charged == [began.payment_request_id]
    assert tokens_left == 0


def _encoded(command: CreatePayment) -> bytes:
    return MESSAGES.encode_command(command)


async def _until_committed(bootstrap: str, settings: Settings, offsets: int) -> None:
    """Until the consumer has committed ``offsets`` commands: each handled (answered or
    dead-lettered) before its offset is committed."""
    deadline = asyncio.get_running_loop().time() + 60
    while await committed_total(bootstrap, settings.consumer_group, settings.commands_topic) < (
        offsets
    ):
        assert asyncio.get_running_loop().time() < deadline, "commands not handled in 60 s"
        await asyncio.sleep(0.2)
