"""A data key retired while a value sealed under it is on its way to the database must not
lose that value.

A tokenization seals the number under the newest data key this process knows, then queues
the row's insert on the writer queue: the insert can land any time later (a backed-up
queue, a database that stalls). ``paygate keys retire`` erases a key's bytes once no row
uses it, and its only guard against such a value is time (the key's successor must be
older than twice the processes' key refresh). A row inserted after that, under the erased
key, never opens again: a saved card lost for good.

So an insert is refused once its key is retired (the retire and the inserts serialize on
the key's row), and the tokenization seals the number again under the newest key.

The steps are forced by hand: the insert waits until the operator has rotated, rewrapped
and retired (SQLite and PostgreSQL); on PostgreSQL, an insert whose transaction is still
open when the retire counts the key's values makes the retire wait for it, and refuse. A
payment's own tokens, inserted by its begin, are checked alike: a begin held past the
retire is refused, and the command admitted again under the newest key; in a batch of
begins, the others are begun once each, alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from consumer.account_intake import AccountIntake, AdmittedPayments
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from domain.accounts import Account, AccountType
from domain.vaulted import VaultedAccount
from persistence.attempts import attempt_key_for
from persistence.group_commit import Bulk, GroupCommit
from persistence.lock_order import RowLocks
from persistence.payment_store import PaymentStore
from persistence.tables import provider_attempts
from providers.registry import Providers
from providers.routing import Router
from providers.sandbox import InProcessSandboxProvider
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.integration.test_rate_limit_lock_order import two_engines  # noqa: F401
from tests.integration.test_vault_lock_order import _pause
from tests.integration.test_writer_lock_order import _until_a_lock_wait
from tests.support.builders import ACCOUNT_KEY, PAYEE_IBAN, SUCCESS_CARD, create_payment
from tests.support.clock import Clock
from tests.support.held_writes import HeldWrites
from tests.support.vault_keys import FINGERPRINT_KEY, KEK_1
from vault.kek import LocalKeyEncryptionKeys
from vault.recent_numbers import RecentNumbers
from vault.rows import EntryRow, VaultRows
from vault.vault import KeyInUseError, Vault

pytestmark = pytest.mark.integration

CARD = Account(AccountType.CARD, SUCCESS_CARD)
REFRESH_S = 30.0


class _SlowInserts(VaultRows):
    """Rows whose first insert waits for ``release`` (``queued`` is set meanwhile)."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.queued = asyncio.Event()
        self.release = asyncio.Event()

    async def add_entry(self, entry: EntryRow) -> None:
        if not self.queued.is_set():
            self.queued.set()
            await self.release.wait()
        await super().add_entry(entry)


def _vault(rows: VaultRows, clock: Clock) -> Vault:
    return Vault(
        rows,
        LocalKeyEncryptionKeys.from_text(KEK_1),
        FINGERPRINT_KEY,
        clock=clock,
        primary_refresh_s=REFRESH_S,
    )


async def test_a_card_whose_insert_lands_after_its_key_is_retired_still_opens(
    engine: AsyncEngine,
) -> None:
    clock = Clock()
    operator = _vault(VaultRows(engine), clock)
    old_key = (await operator.rotate()).key_id
    slow = _SlowInserts(engine)
    facade = _vault(slow, clock)

    saving = asyncio.create_task(facade.tokenize(CARD, client_id="acme", saved=True))
    await asyncio.wait_for(slow.queued.wait(), 10)  # sealed under old_key, not yet inserted

    clock.now += timedelta(seconds=1)
    await operator.rotate()
    clock.now += timedelta(seconds=2 * REFRESH_S + 1)  # past the retire's time guard
    await operator.rewrap()
    await operator.retire(old_key)  # no row uses it: its bytes are erased

    slow.release.set()
    saved = await asyncio.wait_for(saving, 10)

    # Another process (no data key cached) opens the card, and no row is left under a
    # retired key.
    assert await _vault(VaultRows(engine), clock).reveal(saved, client_id="acme") == CARD
    assert [(k.active, k.values) for k in await operator.keys()] == [(False, 0), (True, 1)]


class _InsertHeldOpen(VaultRows):
    """Rows whose inserts run in a batch of their writer queue that then pauses, its
    transaction open, until the test resumes it."""

    def __init__(
        self,
        engine: AsyncEngine,
        writes: GroupCommit,
        pause: Callable[[AsyncConnection], Awaitable[None]],
    ) -> None:
        super().__init__(engine, writes)
        self._queue = writes
        self._pause = pause

    async def add_entry(self, entry: EntryRow) -> None:
        await asyncio.gather(super().add_entry(entry), self._queue.run(self._pause))


async def test_a_retire_waits_for_an_insert_under_its_key_and_refuses(
    two_engines: list[AsyncEngine],  # noqa: F811
) -> None:
    facade_engine, command_engine = two_engines
    clock = Clock()
    clock.now += timedelta(days=3650)  # newer than any key another test left here
    await _retire_waits_for_a_held_insert_and_refuses(facade_engine, command_engine, clock)


async def _retire_waits_for_a_held_insert_and_refuses(
    facade_engine: AsyncEngine, command_engine: AsyncEngine, clock: Clock
) -> None:
    """A facade's card insert under the old key held open (uncommitted) while an operator
    rotates and retires that key: the retire waits for the insert's lock, then refuses, and
    the card opens."""
    operator = _vault(VaultRows(command_engine), clock)
    old_key = (await operator.rotate()).key_id
    paused, resume, pause = _pause()
    facade = _vault(_InsertHeldOpen(facade_engine, GroupCommit(facade_engine), pause), clock)

    # The facade's batch: the card's insert under old_key, then the pause, uncommitted.
    saving = asyncio.ensure_future(facade.tokenize(CARD, client_id="acme", saved=True))
    await asyncio.wait_for(paused.wait(), 10)
    clock.now += timedelta(seconds=1)
    await operator.rotate()
    clock.now += timedelta(seconds=2 * REFRESH_S + 1)
    retiring = asyncio.ensure_future(operator.retire(old_key))
    await _until_a_lock_wait(facade_engine, retiring)
    resume.set()
    saved = await asyncio.wait_for(saving, 10)

    with pytest.raises(KeyInUseError):
        await retiring
    assert await _vault(VaultRows(facade_engine), clock).reveal(saved, client_id="acme") == CARD


class _PausedReads(VaultRows):
    """Rows whose first read of the values to move waits for ``release``."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def entries_not_under(self, key_id: str, limit: int) -> list[EntryRow]:
        if not self.reading.is_set():
            self.reading.set()
            await self.release.wait()
        return await super().entries_not_under(key_id, limit)


async def test_a_rewrap_begun_before_a_rotation_never_moves_cards_under_a_retired_key(
    engine: AsyncEngine,
) -> None:
    # A rewrap moves every value not under its target, the newest key when it began. One
    # begun before a rotation, still running when the operator has rotated, rewrapped
    # (everything now under the newest key) and retired its target (no value under it),
    # moved the values back under the erased key: every card lost.
    clock = Clock()
    operator = _vault(VaultRows(engine), clock)
    await operator.rotate()
    cards = [await operator.tokenize(CARD, client_id="acme", saved=True) for _ in range(2)]
    clock.now += timedelta(seconds=1)
    stale_rows = _PausedReads(engine)
    stale = _vault(stale_rows, clock)
    stale_target = (await stale.rotate()).key_id

    rewrapping = asyncio.ensure_future(stale.rewrap())
    await asyncio.wait_for(stale_rows.reading.wait(), 10)  # its target: stale_target
    clock.now += timedelta(seconds=1)
    await operator.rotate()
    clock.now += timedelta(seconds=2 * REFRESH_S + 1)
    assert (await operator.rewrap()).values_moved == 2
    await operator.retire(stale_target)
    stale_rows.release.set()
    await asyncio.wait_for(rewrapping, 10)

    fresh = _vault(VaultRows(engine), clock)
    for card in cards:
        assert await fresh.reveal(card, client_id="acme") == CARD
    assert [(k.active, k.values) for k in await operator.keys()] == [
        (True, 0),
        (False, 0),
        (True, 2),
    ]


async def test_a_payments_card_whose_begin_lands_after_its_key_is_retired_still_opens(
    engine: AsyncEngine, clock: Clock, provider: InProcessSandboxProvider
) -> None:
    # The consumer's intake seals a command's clear numbers (under the newest key it read,
    # up to primary_refresh_s ago) and the payment's begin inserts their rows. A begin held
    # past the key's rotation, rewrap and retire inserted them under the erased key. By
    # then the numbers held in memory for the call are stale (a retire comes at least 30 s
    # after such a seal, the hold lasts 10 s) and the call reads the rows: the consumer
    # that sealed them still opens them (it keeps the data key in memory), but no other
    # process can, nor this one after a restart: a re-send of the call after a crash, or by
    # another consumer or the reconciler, fails encryption_key_unknown and the payment is
    # abandoned.
    operator = _vault(VaultRows(engine), clock)
    old_key = (await operator.rotate()).key_id
    monotonic = [0.0]
    recent = RecentNumbers(capacity=16, monotonic=lambda: monotonic[0])
    vault = Vault(
        VaultRows(engine, GroupCommit(engine)),
        LocalKeyEncryptionKeys.from_text(KEK_1),
        ACCOUNT_KEY,  # as the consumer's: the fingerprints the payment keeps
        clock=clock,
        recent=recent,
    )
    writes = HeldWrites(engine, held=0)  # the payment's first begin
    handler = PaymentCommandHandler(
        store=PaymentStore(engine, clock, writes=writes),
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=PaymentEvents(PaymentMessages.bundled(), "payments.results"),
        account_key=ACCOUNT_KEY,
        metrics=Metrics(),
        clock=clock,
        vault=vault,
    )
    intake = AccountIntake(vault, _NoDecrypter(), accept_clear=True, retention=timedelta(days=1))
    command = create_payment()

    handling = asyncio.ensure_future(AdmittedPayments(intake, handler).handle(command))
    await asyncio.wait_for(writes.queued.wait(), 10)  # sealed under old_key, not begun
    clock.now += timedelta(seconds=1)
    await operator.rotate()
    clock.now += timedelta(seconds=2 * REFRESH_S + 1)
    await operator.rewrap()  # the rows are not there yet
    await operator.retire(old_key)
    monotonic[0] += 2 * REFRESH_S  # the numbers held at the seal are stale by now
    writes.release.set()

    assert await asyncio.wait_for(handling, 10) is Outcome.SUCCEEDED
    # (The sandbox charges a card by its number: SUCCESS_CARD, opened from the new rows.)
    # Another process (no data key cached) opens the payment's rows, and none is left
    # under a retired key.
    other = _vault(VaultRows(engine), clock)
    entries = await VaultRows(engine).entries_not_under("", 10)  # every row
    numbers = set()
    for entry in entries:
        vaulted = VaultedAccount(
            AccountType(entry.account_type), entry.token, entry.masked, entry.fingerprint, None
        )
        numbers.add((await other.reveal(vaulted, client_id=entry.client_id)).number)
    assert numbers == {SUCCESS_CARD, PAYEE_IBAN}
    assert [(k.active, k.values) for k in await operator.keys()] == [(False, 0), (True, 2)]


class _NoDecrypter:
    def decrypt(self, account: object) -> Account:
        raise AssertionError("no encrypted account in this command")


class _HeldBatch(GroupCommit):
    """A writer queue whose first ``held`` writes wait for ``release`` and are then queued
    together; the size of every batch it runs is kept in ``batches``."""

    def __init__(self, engine: AsyncEngine, *, held: int) -> None:
        super().__init__(engine)
        self._held = held
        self._writes = 0
        # Set when write number i is held.
        self.holding = [asyncio.Event() for _ in range(held)]
        self.release = asyncio.Event()
        self.batches: list[int] = []

    async def run(
        self,
        operation: Callable[[AsyncConnection], Awaitable[Any]],
        bulk: Bulk | None = None,
        *,
        locks: RowLocks | None = None,
    ) -> Any:
        index, self._writes = self._writes, self._writes + 1
        if index < self._held:
            self.holding[index].set()
            await self.release.wait()
        return await super().run(operation, bulk, locks=locks)

    async def _flush(self, batch: list[Any], aborts: int = 0) -> None:
        self.batches.append(len(batch))
        await super()._flush(batch, aborts)


async def test_a_batch_of_begins_one_under_a_retired_key_begins_each_payment_once(
    engine: AsyncEngine, clock: Clock, provider: InProcessSandboxProvider
) -> None:
    # Two payments' begins land in one transaction of the writer queue, run together
    # (begin_many): the first's tokens sealed under a key retired meanwhile, the second's
    # under the newest. The retired key refuses the whole batch; each begin is then run
    # alone: the second begins once, the first is refused and admitted again under the
    # newest key. Each payment is charged once, under its one attempt key.
    operator = _vault(VaultRows(engine), clock)
    old_key = (await operator.rotate()).key_id
    vault = Vault(
        VaultRows(engine, GroupCommit(engine)),
        LocalKeyEncryptionKeys.from_text(KEK_1),
        ACCOUNT_KEY,
        clock=clock,
    )
    writes = _HeldBatch(engine, held=2)  # the two payments' first begins
    handler = PaymentCommandHandler(
        store=PaymentStore(engine, clock, writes=writes),
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=PaymentEvents(PaymentMessages.bundled(), "payments.results"),
        account_key=ACCOUNT_KEY,
        metrics=Metrics(),
        clock=clock,
        vault=vault,
    )
    intake = AccountIntake(vault, _NoDecrypter(), accept_clear=True, retention=timedelta(days=1))
    payments = AdmittedPayments(intake, handler)
    under_old, under_new = create_payment(), create_payment()

    first = asyncio.ensure_future(payments.handle(under_old))
    await asyncio.wait_for(writes.holding[0].wait(), 10)  # sealed under old_key, not begun
    clock.now += timedelta(seconds=1)
    await operator.rotate()
    await vault.newest_key_id()  # this process now seals under the new key
    second = asyncio.ensure_future(payments.handle(under_new))
    await asyncio.wait_for(writes.holding[1].wait(), 10)
    clock.now += timedelta(seconds=2 * REFRESH_S + 1)
    await operator.rewrap()  # the rows are not there yet
    await operator.retire(old_key)
    writes.release.set()

    assert list(await asyncio.wait_for(asyncio.gather(first, second), 10)) == [
        Outcome.SUCCEEDED,
        Outcome.SUCCEEDED,
    ]
    # Both begins in one transaction, refused together, then each run alone.
    assert writes.batches[:3] == [2, 1, 1]
    charges = await provider.acquirer.charges()
    assert sorted(c.payment_reference for c in charges) == sorted(
        [under_old.payment_request_id, under_new.payment_request_id]
    )
    async with engine.connect() as conn:
        attempts = (
            await conn.execute(
                select(provider_attempts.c.payment_id, provider_attempts.c.attempt_key)
            )
        ).all()
    assert sorted(attempts) == sorted(
        [
            (under_old.payment_request_id, attempt_key_for(under_old.payment_request_id, 1)),
            (under_new.payment_request_id, attempt_key_for(under_new.payment_request_id, 1)),
        ]
    )
    assert sorted(c.idempotency_key for c in charges) == sorted(key for _, key in attempts)
    assert [(k.active, k.values) for k in await operator.keys()] == [(False, 0), (True, 4)]


async def test_a_retire_counts_an_insert_it_waited_for_whatever_the_servers_isolation(
    two_engines: list[AsyncEngine],  # noqa: F811
) -> None:
    # The retire locks the key's row, waits for an insert under the key holding it, then
    # counts the key's values: in READ COMMITTED the count is a fresh snapshot and sees the
    # insert. A server whose default is REPEATABLE READ (default_transaction_isolation, set
    # by a DBA for the database) gave the retire one snapshot, taken at its lock's
    # statement before the wait: the count missed the insert, the key was erased and the
    # card under it never opened again (SQLite: no isolation levels, nothing to play).
    facade_engine, command_engine = two_engines
    async with command_engine.begin() as conn:
        await conn.execute(
            text(
                "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET "
                "default_transaction_isolation TO ''repeatable read''', current_database()); "
                "END $$"
            )
        )
    await facade_engine.dispose()  # new connections take the database's default
    await command_engine.dispose()
    async with command_engine.connect() as conn:
        assert await conn.scalar(text("SHOW default_transaction_isolation")) == ("repeatable read")
    clock = Clock()
    await _retire_waits_for_a_held_insert_and_refuses(facade_engine, command_engine, clock)
