"""After ``paygate keys shred-client`` for a client returns, no token of the client exists and
none can be stored later, whatever was on its way.

The procedure revokes the client's API keys first, but a facade's login cache accepts a
revoked key for up to its lifetime, and a consumer may hold a command of the client: a
card sealed before the shred could be inserted after it. On PostgreSQL an insert whose
transaction was open when the shred's DELETE ran (the DELETE does not see it), or that
committed after it, outlived the shred as well. So the shred records the client in the
transaction of its DELETE, holding the client's vault lock exclusive; every insert holds it
shared and reads the record: it commits before the shred (and is deleted by it) or is
refused after it (``client_shredded``).

The steps are forced by hand on SQLite and PostgreSQL (an insert sealed before the shred
and landing after it; many inserts in one statement; a token inserted with its payment's
begin), and on PostgreSQL with two processes' transactions held open at the point where
the race was (an insert open when the shred starts; a shred open when an insert comes).
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
from consumer.failures import FailureKind, classify
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from domain.accounts import Account, AccountType
from domain.errors import ErrorCode, PaygateError
from persistence.group_commit import GroupCommit
from persistence.payment_begin import Started
from persistence.payment_store import PaymentStore
from persistence.tables import outbox, payments
from persistence.vault_tables import vault_entries
from providers.registry import Providers
from providers.routing import Router
from providers.sandbox import InProcessSandboxProvider
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.integration.test_rate_limit_lock_order import two_engines  # noqa: F401
from tests.integration.test_vault_lock_order import _pause
from tests.integration.test_vault_retire_race import _InsertHeldOpen, _SlowInserts
from tests.integration.test_writer_lock_order import _deadlocks, _until_a_lock_wait
from tests.support.builders import (
    ACCOUNT_KEY,
    SUCCESS_CARD,
    create_payment,
    unexpected_refusal,
)
from tests.support.clock import Clock
from tests.support.vault_keys import FINGERPRINT_KEY, KEK_1
from vault.kek import LocalKeyEncryptionKeys
from vault.rows import VaultRows
from vault.vault import Vault

pytestmark = pytest.mark.integration

CARD = Account(AccountType.CARD, SUCCESS_CARD)
RETENTION = timedelta(days=30)


def _vault(rows: VaultRows, clock: Clock, fingerprint_key: bytes = FINGERPRINT_KEY) -> Vault:
    return Vault(rows, LocalKeyEncryptionKeys.from_text(KEK_1), fingerprint_key, clock=clock)


def _client() -> str:
    return f"client-{uuid.uuid4().hex[:8]}"


async def _tokens_of(engine: AsyncEngine, client_id: str) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count()).where(vault_entries.c.client_id == client_id)
        )
    return int(count or 0)


def _refused_as_shredded(error: PaygateError) -> None:
    assert error.code is ErrorCode.CLIENT_SHREDDED
    assert SUCCESS_CARD not in str(error)
    assert SUCCESS_CARD[-4:] not in error.message


async def test_a_card_sealed_before_a_shred_and_inserted_after_it_is_refused(
    engine: AsyncEngine,
) -> None:
    clock = Clock()
    client = _client()
    operator = _vault(VaultRows(engine), clock)
    slow = _SlowInserts(engine)
    facade = _vault(slow, clock)

    saving = asyncio.ensure_future(facade.tokenize(CARD, client_id=client, saved=True))
    await asyncio.wait_for(slow.queued.wait(), 10)  # sealed, not inserted yet
    assert await operator.delete_client(client) == 0
    slow.release.set()

    with pytest.raises(PaygateError) as refused:
        await asyncio.wait_for(saving, 10)
    _refused_as_shredded(refused.value)
    assert await _tokens_of(engine, client) == 0
    # Later ones too; another client's are stored as before.
    with pytest.raises(PaygateError):
        await operator.tokenize(CARD, client_id=client, saved=True)
    another = _client()
    other = await operator.tokenize(CARD, client_id=another, saved=True)
    assert await operator.reveal(other, client_id=another) == CARD
    assert await _tokens_of(engine, client) == 0


async def test_an_unshred_lets_the_clients_cards_be_stored_again(engine: AsyncEngine) -> None:
    clock = Clock()
    client = _client()
    operator = _vault(VaultRows(engine), clock)
    assert await operator.delete_client(client) == 0
    assert await operator.delete_client(client) == 0  # twice: still one record
    assert await operator.unshred_client(client)
    assert not await operator.unshred_client(client)
    saved = await operator.tokenize(CARD, client_id=client, saved=True)
    assert await operator.reveal(saved, client_id=client) == CARD


async def test_inserts_in_one_statement_refuse_only_the_shredded_clients(
    engine: AsyncEngine,
) -> None:
    clock = Clock()
    shredded, kept = _client(), _client()
    operator = _vault(VaultRows(engine), clock)
    assert await operator.delete_client(shredded) == 0
    writes = GroupCommit(engine)
    paused, resume, pause = _pause()
    facade = _vault(VaultRows(engine, writes), clock)
    await facade.seal(b"", b"warm")  # the data key read and cached: a tokenization only inserts

    # The queue's transaction is held open while four tokenizations queue behind it, so
    # they run as one batch: one INSERT of four rows (vault.rows' bulk path).
    holding = asyncio.ensure_future(writes.run(pause))
    await asyncio.wait_for(paused.wait(), 10)
    saving = asyncio.gather(
        facade.tokenize(CARD, client_id=kept, saved=True),
        facade.tokenize(CARD, client_id=shredded, saved=True),
        facade.tokenize(CARD, client_id=kept, saved=True),
        facade.tokenize(CARD, client_id=shredded),
        return_exceptions=True,
    )
    for _ in range(10):  # each queues its insert at its first step (no read before it)
        await asyncio.sleep(0)
    resume.set()
    await holding
    results = await asyncio.wait_for(saving, 10)

    for refused in (results[1], results[3]):
        assert isinstance(refused, PaygateError)
        _refused_as_shredded(refused)
    for stored in (results[0], results[2]):
        assert not isinstance(stored, BaseException)
        assert await operator.reveal(stored, client_id=kept) == CARD
    assert await _tokens_of(engine, shredded) == 0
    assert await _tokens_of(engine, kept) == 2


async def test_a_payment_whose_token_comes_with_its_begin_is_refused_for_a_shredded_client(
    engine: AsyncEngine, clock: Clock, provider: InProcessSandboxProvider
) -> None:
    # A Kafka command of the client with an account number (encrypted to paygate, or clear
    # where accepted): its token is inserted with the payment's begin (tokenize_along). The
    # payment is refused with the token: no payment row, no result event, no token, and
    # a permanent failure (dead-lettered at once, with its code), never a charge.
    client = _client()
    vault = _vault(VaultRows(engine, GroupCommit(engine)), clock, ACCOUNT_KEY)
    handler = PaymentCommandHandler(
        store=PaymentStore(engine, clock),
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=PaymentEvents(PaymentMessages.bundled(), "payments.results"),
        account_key=ACCOUNT_KEY,
        metrics=Metrics(),
        clock=clock,
        vault=vault,
    )
    assert await vault.delete_client(client) == 0
    intake = AccountIntake(vault, _NoDecrypter(), accept_clear=True, retention=RETENTION)
    command = dataclasses.replace(create_payment(), client_id=client)

    with pytest.raises(PaygateError) as refused:
        await AdmittedPayments(intake, handler).handle(command)

    _refused_as_shredded(refused.value)
    failure = classify(refused.value)
    assert (failure.kind, failure.code) == (FailureKind.PERMANENT, ErrorCode.CLIENT_SHREDDED)
    assert await _tokens_of(engine, client) == 0
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(payments)) == 0
        assert await conn.scalar(select(func.count()).select_from(outbox)) == 0


class _NoDecrypter:
    def decrypt(self, account: object) -> Account:
        raise AssertionError("no encrypted account in these commands")


async def test_an_insert_under_way_when_the_shred_begins_is_deleted_by_it(
    two_engines: list[AsyncEngine],  # noqa: F811
) -> None:
    facade_engine, command_engine = two_engines
    clock = Clock()
    client = _client()
    operator = _vault(VaultRows(command_engine), clock)
    paused, resume, pause = _pause()
    facade = _vault(_InsertHeldOpen(facade_engine, GroupCommit(facade_engine), pause), clock)
    deadlocks = _deadlocks([facade_engine, command_engine])

    # The facade's batch: the card's insert, then the pause, uncommitted. The shred's
    # DELETE, run now, would not see the row, which would then commit after it.
    saving = asyncio.ensure_future(facade.tokenize(CARD, client_id=client, saved=True))
    await asyncio.wait_for(paused.wait(), 10)
    shredding = asyncio.ensure_future(operator.delete_client(client))
    await _until_a_lock_wait(facade_engine, shredding)
    resume.set()
    saved = await asyncio.wait_for(saving, 10)  # committed before the shred...

    assert await asyncio.wait_for(shredding, 10) == 1  # ...which deleted it
    assert deadlocks == []
    assert await _tokens_of(facade_engine, client) == 0
    with pytest.raises(PaygateError) as gone:
        await _vault(VaultRows(facade_engine), clock).reveal(saved, client_id=client)
    assert gone.value.code is ErrorCode.PAYMENT_METHOD_NOT_FOUND


async def test_an_insert_arriving_while_the_shred_is_open_waits_for_it_and_is_refused(
    two_engines: list[AsyncEngine],  # noqa: F811
) -> None:
    facade_engine, command_engine = two_engines
    clock = Clock()
    client = _client()
    command_writes = GroupCommit(command_engine)
    operator_rows = VaultRows(command_engine, command_writes)
    facade = _vault(VaultRows(facade_engine, GroupCommit(facade_engine)), clock)
    await facade.newest_key_id()
    paused, resume, pause = _pause()
    deadlocks = _deadlocks([facade_engine, command_engine])

    # The shred's batch: its record and DELETE, then the pause, uncommitted.
    shredding = asyncio.gather(
        operator_rows.delete_client(client, clock.now), command_writes.run(pause)
    )
    await asyncio.wait_for(paused.wait(), 10)
    saving = asyncio.ensure_future(facade.tokenize(CARD, client_id=client, saved=True))
    await _until_a_lock_wait(facade_engine, saving)
    resume.set()
    assert (await asyncio.wait_for(shredding, 10))[0] == 0

    with pytest.raises(PaygateError) as refused:
        await asyncio.wait_for(saving, 10)
    _refused_as_shredded(refused.value)
    assert deadlocks == []
    assert await _tokens_of(facade_engine, client) == 0


async def test_a_begin_carrying_a_token_under_way_when_the_shred_begins_loses_the_token(
    two_engines: list[AsyncEngine],  # noqa: F811
) -> None:
    # The consumer's begin with its token (tokenize_along) holds the client's vault lock
    # like any insert (PaymentStore.begin takes its ``along`` writes' locks): the shred
    # waits for it and deletes the token; the payment, begun before the shred, finds its
    # token gone at its provider call (payment_method_not_found: test_vault_recent_numbers).
    consumer_engine, command_engine = two_engines
    clock = Clock()
    client = _client()
    writes = GroupCommit(consumer_engine)
    store = PaymentStore(consumer_engine, clock, writes=writes)
    vault = _vault(VaultRows(consumer_engine, writes), clock, ACCOUNT_KEY)
    operator = _vault(VaultRows(command_engine), clock)
    command = dataclasses.replace(create_payment(), client_id=client)
    vaulted, along = await vault.tokenize_along(CARD, client_id=client, expires_in=RETENTION)
    assert along is not None
    command = dataclasses.replace(command, payer=vaulted)
    paused, resume, pause = _pause()
    deadlocks = _deadlocks([consumer_engine, command_engine])

    beginning = asyncio.gather(
        store.begin(
            command,
            provider="sandbox",
            account_key=ACCOUNT_KEY,
            refusal_event=unexpected_refusal,
            along=[along],
        ),
        writes.run(pause),
    )
    await asyncio.wait_for(paused.wait(), 10)
    shredding = asyncio.ensure_future(operator.delete_client(client))
    await _until_a_lock_wait(consumer_engine, shredding)
    resume.set()
    begun, _ = await asyncio.wait_for(beginning, 10)

    assert isinstance(begun, Started)
    assert await asyncio.wait_for(shredding, 10) == 1
    assert deadlocks == []
    assert await _tokens_of(consumer_engine, client) == 0
