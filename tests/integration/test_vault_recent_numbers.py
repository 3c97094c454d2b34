"""The consumer's held numbers (vault.recent_numbers) on SQLite and PostgreSQL: a number its
intake vaulted is charged from memory only while its token is live in the database. A token
deleted, erased with its client, or expired between the intake and the provider call is
never charged (``payment_method_not_found``, as before the numbers were held), whichever
process deleted it; and the provider never hears of that payment."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.account_intake import AccountIntake
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from domain.accounts import Account, AccountType
from domain.errors import ErrorCode, PaygateError
from domain.payments import CreatePayment
from domain.status import PaymentStatus
from domain.vaulted import AccountToken, VaultedAccount
from persistence.group_commit import GroupCommit, run_bulks
from persistence.payment_store import PaymentStore
from persistence.tables import outbox, provider_attempts
from providers.registry import Providers
from providers.routing import Router
from providers.sandbox import InProcessSandboxProvider
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import ACCOUNT_KEY, PAYEE_IBAN, SUCCESS_CARD, create_payment
from tests.support.clock import Clock
from tests.support.intake import admit_and_write
from tests.support.vault_keys import KEK_1
from vault.kek import LocalKeyEncryptionKeys
from vault.recent_numbers import RecentNumbers
from vault.rows import VaultRows
from vault.vault import Vault

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
RETENTION = timedelta(days=30)
CLIENT = "acme"


class _NoDecrypter:
    def decrypt(self, account: object) -> Account:
        raise AssertionError("no encrypted account in these commands")


def _vault(engine: AsyncEngine, clock: Clock, recent: RecentNumbers | None = None) -> Vault:
    return Vault(
        VaultRows(engine, GroupCommit(engine)),
        LocalKeyEncryptionKeys.from_text(KEK_1),
        ACCOUNT_KEY,
        clock=clock,
        recent=recent,
    )


@dataclasses.dataclass
class Consumer:
    """The consumer's side as paygate.consumer_service wires it: one vault, holding numbers."""

    recent: RecentNumbers
    vault: Vault
    intake: AccountIntake
    handler: PaymentCommandHandler
    engine: AsyncEngine


@pytest.fixture
def consumer(engine: AsyncEngine, clock: Clock, provider: InProcessSandboxProvider) -> Consumer:
    recent = RecentNumbers(capacity=16)
    vault = _vault(engine, clock, recent)
    handler = PaymentCommandHandler(
        store=PaymentStore(engine, clock),
        providers=Providers.of(provider),
        router=Router({"*": [provider.name]}),
        events=PaymentEvents(MESSAGES, "payments.results"),
        account_key=ACCOUNT_KEY,
        metrics=Metrics(),
        clock=clock,
        vault=vault,
    )
    intake = AccountIntake(vault, _NoDecrypter(), accept_clear=True, retention=RETENTION)
    return Consumer(recent, vault, intake, handler, engine)


async def _admitted(consumer: Consumer) -> CreatePayment:
    command = dataclasses.replace(create_payment(), client_id=CLIENT)
    admitted = await admit_and_write(consumer.intake, command, consumer.engine)
    assert isinstance(admitted.payer, VaultedAccount)
    assert isinstance(admitted.payee, VaultedAccount)
    assert len(consumer.recent) == 2  # both numbers held: the call would not read them
    return admitted


def _vaulted(account: object) -> VaultedAccount:
    assert isinstance(account, VaultedAccount)
    return account


def _token(account: object) -> str:
    return _vaulted(account).token


async def _attempt_keys(engine: AsyncEngine, command: CreatePayment) -> list[str]:
    async with engine.connect() as conn:
        keys = await conn.scalars(
            select(provider_attempts.c.attempt_key).where(
                provider_attempts.c.payment_id == command.payment_request_id
            )
        )
        return list(keys)


async def _event(engine: AsyncEngine, command: CreatePayment):
    async with engine.connect() as conn:
        payloads = (await conn.execute(select(outbox.c.payload))).scalars().all()
    (event,) = [
        e
        for e in (MESSAGES.decode_result(p) for p in payloads)
        if e.payment_request_id == command.payment_request_id
    ]
    return event


async def _refused_without_a_charge(
    consumer: Consumer, engine: AsyncEngine, provider: InProcessSandboxProvider, command
) -> None:
    assert await consumer.handler.handle(command) is Outcome.FAILED
    event = await _event(engine, command)
    assert (event.status, event.error.code) == (
        PaymentStatus.FAILED,
        ErrorCode.PAYMENT_METHOD_NOT_FOUND,
    )
    assert SUCCESS_CARD not in event.error.message
    (attempt_key,) = await _attempt_keys(engine, command)
    assert await provider.charge_status(attempt_key) is None  # the acquirer never saw it


async def test_a_live_held_number_is_charged(consumer, engine, provider) -> None:
    command = await _admitted(consumer)
    assert await consumer.handler.handle(command) is Outcome.SUCCEEDED
    assert len(consumer.recent) == 0  # taken by the call, not kept
    (attempt_key,) = await _attempt_keys(engine, command)
    charged = await provider.charge_status(attempt_key)
    assert charged is not None
    assert charged.status.value == "succeeded"


async def test_a_token_deleted_by_another_process_after_the_intake_is_never_charged(
    consumer, engine, clock, provider
) -> None:
    command = await _admitted(consumer)
    facade = _vault(engine, clock)  # DELETE /v1/payment_methods/{token} in the facade
    assert await facade.delete(_token(command.payer), client_id=CLIENT)
    await _refused_without_a_charge(consumer, engine, provider, command)


async def test_a_client_erased_after_the_intake_is_never_charged(
    consumer, engine, clock, provider
) -> None:
    command = await _admitted(consumer)
    assert await _vault(engine, clock).delete_client(CLIENT) == 2  # erasure on request
    await _refused_without_a_charge(consumer, engine, provider, command)


async def test_a_payee_token_deleted_in_this_process_is_never_charged(
    consumer, engine, provider
) -> None:
    command = await _admitted(consumer)
    assert await consumer.vault.delete(_token(command.payee), client_id=CLIENT)
    await _refused_without_a_charge(consumer, engine, provider, command)


async def test_a_token_expired_after_the_intake_is_never_charged(
    consumer, engine, clock, provider
) -> None:
    command = await _admitted(consumer)
    # Past its retention, before the retention job has shredded the row.
    clock.now += RETENTION
    await _refused_without_a_charge(consumer, engine, provider, command)


async def test_liveness_on_the_database(engine: AsyncEngine, clock: Clock) -> None:
    rows = VaultRows(engine, GroupCommit(engine))
    vault = Vault(rows, LocalKeyEncryptionKeys.from_text(KEK_1), ACCOUNT_KEY, clock=clock)
    scoped = await vault.tokenize(Account(AccountType.CARD, SUCCESS_CARD), client_id=CLIENT)
    upstream = await vault.tokenize(Account(AccountType.IBAN, PAYEE_IBAN), client_id=None)
    assert await rows.is_live(scoped.token, CLIENT)
    assert await rows.is_live(upstream.token, None)
    assert not await rows.is_live(scoped.token, None)
    assert not await rows.is_live(scoped.token, "other")
    assert not await rows.is_live(upstream.token, CLIENT)
    assert await vault.delete(scoped.token, client_id=CLIENT)
    assert not await rows.is_live(scoped.token, CLIENT)
    assert await rows.is_live(upstream.token, None)


class _CountedWrites(GroupCommit):
    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.operations = 0

    async def run(self, operation, bulk=None, *, locks=None):
        self.operations += 1
        return await super().run(operation, bulk, locks=locks)


async def test_the_intakes_two_numbers_ride_on_the_begin_and_both_held(
    engine: AsyncEngine, clock: Clock
) -> None:
    """The consumer's intake writes nothing of its own: the two rows go to the payment's
    begin (``admit_along``), and both numbers are held for the call once it commits."""
    writes = _CountedWrites(engine)
    recent = RecentNumbers(capacity=4)
    vault = Vault(
        VaultRows(engine, writes),
        LocalKeyEncryptionKeys.from_text(KEK_1),
        ACCOUNT_KEY,
        clock=clock,
        recent=recent,
    )
    # The first tokenization ever also makes the data key: not what is counted here.
    first = await vault.tokenize(Account(AccountType.CARD, SUCCESS_CARD), client_id=None)
    assert recent.take(first.token, None) is not None
    writes.operations = 0
    intake = AccountIntake(vault, _NoDecrypter(), accept_clear=True, retention=RETENTION)
    command = create_payment()
    admitted, along = await intake.admit_along(command)
    assert writes.operations == 0
    assert len(along) == 2
    assert len(recent) == 2
    # The begin's transaction, reduced to the rows it carries for the vault.
    async with engine.begin() as conn:
        await run_bulks(conn, along)
    vaulted = (_vaulted(admitted.payer), _vaulted(admitted.payee))
    held = [await vault.reveal(account, client_id=None) for account in vaulted]
    assert held == [command.payer, command.payee]
    assert len(recent) == 0
    # Read back from the rows and decrypted, as another process would: the same numbers.
    other = _vault(engine, clock)
    assert [await other.reveal(account, client_id=None) for account in vaulted] == held


async def _by_tokens(consumer: Consumer, *, saved: bool) -> CreatePayment:
    """A command naming both accounts by tokens a client made first (the facade's vault):
    the intake decrypts each to check it opens, and holds the number for the call."""
    command = dataclasses.replace(create_payment(), client_id=CLIENT)
    tokens = []
    for account in (command.payer, command.payee):
        assert isinstance(account, Account)
        made = await consumer.vault.tokenize(
            account, client_id=CLIENT, saved=saved, expires_in=None if saved else RETENTION
        )
        tokens.append(AccountToken(made.type, made.token))
    consumer.recent.clear()  # made elsewhere: nothing of theirs is held yet
    admitted = await admit_and_write(
        consumer.intake, dataclasses.replace(command, payer=tokens[0], payee=tokens[1])
    )
    assert len(consumer.recent) == 2
    return admitted


async def test_a_checked_token_is_charged_from_memory(consumer, engine, provider) -> None:
    command = await _by_tokens(consumer, saved=True)
    assert await consumer.handler.handle(command) is Outcome.SUCCEEDED
    assert len(consumer.recent) == 0
    (attempt_key,) = await _attempt_keys(engine, command)
    assert await provider.charge_status(attempt_key) is not None


async def test_a_checked_token_deleted_before_the_call_is_never_charged(
    consumer, engine, clock, provider
) -> None:
    command = await _by_tokens(consumer, saved=True)
    assert await _vault(engine, clock).delete(_token(command.payer), client_id=CLIENT)
    await _refused_without_a_charge(consumer, engine, provider, command)


async def test_a_checked_token_expired_before_the_call_is_never_charged(
    consumer, engine, clock, provider
) -> None:
    command = await _by_tokens(consumer, saved=False)
    clock.now += RETENTION
    await _refused_without_a_charge(consumer, engine, provider, command)


async def test_a_number_held_for_a_begin_that_never_committed_is_not_handed_out(
    engine: AsyncEngine, clock: Clock
) -> None:
    """``tokenize_along`` holds the number before its row commits in the begin; a begin
    that fails leaves a token that names nothing, and the held number must not open it."""
    recent = RecentNumbers(capacity=4)
    vault = Vault(
        VaultRows(engine, GroupCommit(engine)),
        LocalKeyEncryptionKeys.from_text(KEK_1),
        ACCOUNT_KEY,
        clock=clock,
        recent=recent,
    )
    intake = AccountIntake(vault, _NoDecrypter(), accept_clear=True, retention=RETENTION)
    admitted, along = await intake.admit_along(create_payment())
    assert len(along) == 2
    assert len(recent) == 2
    # The begin fails: its transaction, with the vault rows in it, rolls back.
    async with engine.connect() as conn:
        transaction = await conn.begin()
        await run_bulks(conn, along)
        await transaction.rollback()
    for account in (_vaulted(admitted.payer), _vaulted(admitted.payee)):
        with pytest.raises(PaygateError) as refused:
            await vault.reveal(account, client_id=None)
        assert refused.value.code is ErrorCode.PAYMENT_METHOD_NOT_FOUND
