"""A payment's two accounts cost one vault write transaction, at the facade and at the
consumer's intake, on SQLite and PostgreSQL; at the intake they commit with the payment's
begin (no transaction of their own); and a command refused at intake writes nothing."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.account_intake import AccountIntake
from domain.accounts import Account, AccountType
from domain.errors import ErrorCode, PaygateError
from domain.payments import CreatePayment
from domain.vaulted import AccountToken, VaultedAccount, new_token
from http_facade.account_vaulting import numbers_vaulted
from persistence.group_commit import GroupCommit
from persistence.payment_begin import BeginResult, Started
from persistence.payment_store import PaymentStore
from persistence.vault_tables import vault_entries
from tests.support.builders import ACCOUNT_KEY, PAYEE_IBAN, SUCCESS_CARD, create_payment
from tests.support.clock import Clock
from tests.support.intake import admit_and_write
from tests.support.vault_keys import FINGERPRINT_KEY, KEK_1
from vault.kek import LocalKeyEncryptionKeys
from vault.rows import VaultRows
from vault.vault import Vault

pytestmark = pytest.mark.integration

RETENTION = timedelta(days=30)


class _NoDecrypter:
    def decrypt(self, account: object) -> Account:
        raise AssertionError("no encrypted account in these commands")


def vault_on(engine: AsyncEngine) -> Vault:
    # The facade's and the consumer's wiring: the vault's rows share the writer queue.
    return Vault(
        VaultRows(engine, GroupCommit(engine)),
        LocalKeyEncryptionKeys.from_text(KEK_1),
        FINGERPRINT_KEY,
        clock=Clock(),
    )


@contextmanager
def counted_commits(engine: AsyncEngine) -> Iterator[list[None]]:
    commits: list[None] = []

    def on_commit(_conn: Any) -> None:
        commits.append(None)

    event.listen(engine.sync_engine, "commit", on_commit)
    try:
        yield commits
    finally:
        event.remove(engine.sync_engine, "commit", on_commit)


async def entry_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(vault_entries)) or 0)


async def test_the_facade_vaults_payer_and_payee_in_one_transaction(engine: AsyncEngine) -> None:
    vault = vault_on(engine)
    # The first tokenization ever also makes the data key: not what is counted here.
    await vault.tokenize(Account(AccountType.CARD, SUCCESS_CARD), client_id="acme")
    command = dataclasses.replace(create_payment(), client_id="acme")
    with counted_commits(engine) as commits:
        vaulted = await numbers_vaulted(vault, command, retention=RETENTION)
    assert len(commits) == 1
    assert isinstance(vaulted.payer, VaultedAccount)
    assert isinstance(vaulted.payee, VaultedAccount)
    assert await vault.reveal(vaulted.payer, client_id="acme") == command.payer
    assert await vault.reveal(vaulted.payee, client_id="acme") == command.payee
    assert await entry_count(engine) == 3


async def test_the_intake_vaults_payer_and_payee_in_one_transaction(engine: AsyncEngine) -> None:
    vault = vault_on(engine)
    await vault.tokenize(Account(AccountType.CARD, SUCCESS_CARD), client_id=None)
    intake = AccountIntake(vault, _NoDecrypter(), accept_clear=True, retention=RETENTION)
    command = create_payment()
    with counted_commits(engine) as commits:
        vaulted = await admit_and_write(intake, command, engine)
    assert len(commits) == 1
    assert isinstance(vaulted.payer, VaultedAccount)
    assert isinstance(vaulted.payee, VaultedAccount)
    assert await vault.reveal(vaulted.payer, client_id=None) == command.payer
    assert await vault.reveal(vaulted.payee, client_id=None) == command.payee


async def test_a_command_refused_at_intake_vaults_nothing(engine: AsyncEngine) -> None:
    vault = vault_on(engine)
    await vault.tokenize(Account(AccountType.CARD, SUCCESS_CARD), client_id=None)
    intake = AccountIntake(vault, _NoDecrypter(), accept_clear=True, retention=RETENTION)
    before = await entry_count(engine)
    # A clear payer, and a payee token that does not exist: refused, the payer not vaulted.
    command = dataclasses.replace(
        create_payment(), payee=AccountToken(AccountType.IBAN, new_token(), None)
    )
    with pytest.raises(PaygateError) as caught:
        await admit_and_write(intake, command, engine)
    assert caught.value.code is ErrorCode.PAYMENT_METHOD_NOT_FOUND
    assert await entry_count(engine) == before
    assert PAYEE_IBAN not in caught.value.message


async def begin_with_intake(
    store: PaymentStore, intake: AccountIntake, command: CreatePayment
) -> tuple[CreatePayment, BeginResult]:
    admitted, along = await intake.admit_along(command)
    begun = await store.begin(
        admitted,
        provider="sandbox",
        account_key=ACCOUNT_KEY,
        refusal_event=lambda *_: pytest.fail("not refused"),
        along=along,
    )
    return admitted, begun


async def test_the_intakes_rows_commit_with_the_payments_begin(engine: AsyncEngine) -> None:
    writes = GroupCommit(engine)
    vault = Vault(
        VaultRows(engine, writes), LocalKeyEncryptionKeys.from_text(KEK_1), FINGERPRINT_KEY
    )
    await vault.tokenize(Account(AccountType.CARD, SUCCESS_CARD), client_id=None)
    intake = AccountIntake(vault, _NoDecrypter(), accept_clear=True, retention=RETENTION)
    store = PaymentStore(engine, Clock(), writes=writes)
    before = await entry_count(engine)
    commands = [create_payment(), create_payment()]
    with counted_commits(engine) as commits:
        # Together: both begins (and their vault rows) go through one bulk transaction.
        done = await asyncio.gather(*(begin_with_intake(store, intake, c) for c in commands))
    assert len(commits) == 1
    assert await entry_count(engine) == before + 4
    for command, (admitted, begun) in zip(commands, done, strict=True):
        assert isinstance(begun, Started)
        assert isinstance(admitted.payer, VaultedAccount)
        assert isinstance(admitted.payee, VaultedAccount)
        assert await vault.reveal(admitted.payer, client_id=None) == command.payer
        assert await vault.reveal(admitted.payee, client_id=None) == command.payee
    # Alone (begin_one's path): one commit holds the payment and its two rows.
    with counted_commits(engine) as commits:
        admitted, begun = await begin_with_intake(store, intake, create_payment())
    assert len(commits) == 1
    assert isinstance(begun, Started)
    assert await entry_count(engine) == before + 6


async def test_a_vault_of_its_own_database_commits_its_rows_itself(engine: AsyncEngine) -> None:
    # Without paygate's writer queue the rows cannot join a begin: written at intake.
    vault = Vault(VaultRows(engine), LocalKeyEncryptionKeys.from_text(KEK_1), FINGERPRINT_KEY)
    intake = AccountIntake(vault, _NoDecrypter(), accept_clear=True, retention=RETENTION)
    command = create_payment()
    admitted, along = await intake.admit_along(command)
    assert along == ()
    assert isinstance(admitted.payer, VaultedAccount)
    assert await vault.reveal(admitted.payer, client_id=None) == command.payer
