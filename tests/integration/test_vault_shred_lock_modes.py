"""The client's vault lock, shared and exclusive, as PostgreSQL really takes it, and what a
shred leaves for the writes around it (persistence.lock_order, vault.rows).

- Two scopes whose keys hash alike are one lock, taken exclusive if either asks for it.
- One writer-queue batch that inserts a token of a client and shreds it takes the client's
  lock exclusive (never shared then exclusive, which two such transactions would deadlock
  on); a batch of inserts only takes it shared.
- Inserts of one client in two processes do not wait on each other; a shred waits for the
  one still open and deletes its row.
- A rewrap's swap of a client's token that waits behind the client's shred finds the token
  gone: nothing is written back.
- A Kafka command of a shredded client dead-lettered with clear numbers: the redaction
  cannot vault them (``client_shredded``, permanent), so they are masked in place, and
  nothing is stored (SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from consumer.dead_letter_redaction import DeadLetterRedaction
from domain.accounts import Account, AccountType
from persistence.group_commit import GroupCommit
from persistence.lock_order import _LOCK_ORDERS, RowLocks, vault_scope
from persistence.vault_tables import vault_entries
from schemas.codec import CREATE_PAYMENT, AvroCodec
from schemas.payments import PaymentMessages
from schemas.registry import FileSchemaRegistry
from tests.integration.test_rate_limit_lock_order import two_engines  # noqa: F401
from tests.integration.test_vault_lock_order import _pause
from tests.integration.test_writer_lock_order import _until_a_lock_wait
from tests.support.builders import ACCOUNT_KEY, PAYEE_IBAN, SUCCESS_CARD, create_payment_record
from tests.support.vault_keys import FINGERPRINT_KEY, KEK_1
from vault.kek import LocalKeyEncryptionKeys
from vault.rows import VaultRows
from vault.vault import Vault

pytestmark = pytest.mark.integration

CARD = Account(AccountType.CARD, SUCCESS_CARD)
_ADVISORY_MODES = text(
    "SELECT mode FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
)


def _client() -> str:
    return f"client-{uuid.uuid4().hex[:8]}"


def _vault(rows: VaultRows) -> Vault:
    return Vault(rows, LocalKeyEncryptionKeys.from_text(KEK_1), FINGERPRINT_KEY)


async def _tokens_of(engine: AsyncEngine, client_id: str) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count()).where(vault_entries.c.client_id == client_id)
        )
    return int(count or 0)


async def _modes(conn: AsyncConnection) -> list[str]:
    return sorted((await conn.execute(_ADVISORY_MODES)).scalars())


async def test_a_batch_inserting_and_shredding_one_client_takes_its_lock_exclusive(
    two_engines: list[AsyncEngine],  # noqa: F811
) -> None:
    engine = two_engines[0]
    writes = GroupCommit(engine)
    client = _client()
    insert, shred = RowLocks.of(vault_inserts=[client]), RowLocks.of(vault_clients=[client])

    # Both arrive before the flusher runs: one batch, one transaction.
    mixed = await asyncio.gather(writes.run(_modes, locks=insert), writes.run(_modes, locks=shred))
    assert list(mixed) == [["ExclusiveLock"], ["ExclusiveLock"]]
    inserts_only = await asyncio.gather(
        writes.run(_modes, locks=insert), writes.run(_modes, locks=insert)
    )
    assert list(inserts_only) == [["ShareLock"], ["ShareLock"]]


async def test_two_scopes_hashing_alike_are_one_lock_taken_exclusive_if_either_asks(
    two_engines: list[AsyncEngine],  # noqa: F811
) -> None:
    # A hash collision between two scopes, one wanted shared and one exclusive, stands in
    # as the same scope named twice: the statement sees only the hashes.
    scope = vault_scope(_client())
    async with two_engines[0].connect() as conn, conn.begin():
        await conn.execute(_LOCK_ORDERS, {"scopes": [scope, scope], "exclusive": [False, True]})
        assert await _modes(conn) == ["ExclusiveLock"]


async def test_inserts_of_one_client_in_two_processes_do_not_wait_and_a_shred_waits_for_them(
    two_engines: list[AsyncEngine],  # noqa: F811
) -> None:
    held_engine, other_engine = two_engines
    held_writes = GroupCommit(held_engine)
    client = _client()
    paused, resume, pause = _pause()

    # One process's insert transaction, open, holding the client's lock shared.
    held = asyncio.ensure_future(held_writes.run(pause, locks=RowLocks.of(vault_inserts=[client])))
    await asyncio.wait_for(paused.wait(), 10)
    other = _vault(VaultRows(other_engine, GroupCommit(other_engine)))
    saved = await asyncio.wait_for(other.tokenize(CARD, client_id=client, saved=True), 30)
    assert await _tokens_of(other_engine, client) == 1

    shred = asyncio.ensure_future(other.delete_client(client))
    await _until_a_lock_wait(other_engine, shred)
    assert not shred.done()  # waits for the open insert transaction
    resume.set()
    await asyncio.wait_for(held, 10)
    assert await asyncio.wait_for(shred, 10) == 1
    assert await _tokens_of(other_engine, client) == 0
    assert not await other.delete(saved.token, client_id=client)


async def test_a_rewraps_swap_waiting_behind_a_shred_finds_the_token_gone(
    two_engines: list[AsyncEngine],  # noqa: F811
) -> None:
    operator_engine, rewrap_engine = two_engines
    operator_writes = GroupCommit(operator_engine)
    operator_rows = VaultRows(operator_engine, operator_writes)
    client = _client()
    saved = await _vault(operator_rows).tokenize(CARD, client_id=client, saved=True)
    entry = await operator_rows.entry(saved.token, client)
    assert entry is not None
    paused, resume, pause = _pause()

    # The shred's batch: its DELETE done, its transaction held open (its lock exclusive).
    shred = asyncio.gather(_vault(operator_rows).delete_client(client), operator_writes.run(pause))
    await asyncio.wait_for(paused.wait(), 10)
    rewrap_rows = VaultRows(rewrap_engine, GroupCommit(rewrap_engine))
    swap = asyncio.ensure_future(
        rewrap_rows.replace_ciphertext(
            saved.token, client, entry.key_id, entry.key_id, entry.ciphertext
        )
    )
    await _until_a_lock_wait(rewrap_engine, swap)
    assert not swap.done()
    resume.set()
    assert (await asyncio.wait_for(shred, 10))[0] == 1
    assert await asyncio.wait_for(swap, 10) is False
    assert await _tokens_of(rewrap_engine, client) == 0


async def test_a_dead_letter_of_a_shredded_clients_command_is_masked_not_vaulted(
    engine: AsyncEngine,
) -> None:
    vault = Vault(
        VaultRows(engine, GroupCommit(engine)), LocalKeyEncryptionKeys.from_text(KEK_1), ACCOUNT_KEY
    )
    client = _client()
    assert await vault.delete_client(client) == 0
    messages = PaymentMessages.bundled()
    value = AvroCodec(FileSchemaRegistry.bundled()).encode(
        CREATE_PAYMENT, create_payment_record(clientId=client)
    )
    assert SUCCESS_CARD.encode() in value

    redacted = await DeadLetterRedaction(messages, vault, retention=timedelta(days=1))(value)

    assert len(redacted) == len(value)  # masked in place: it could not be vaulted
    assert SUCCESS_CARD.encode() not in redacted
    assert PAYEE_IBAN.encode() not in redacted
    assert await _tokens_of(engine, client) == 0
