"""A data key retired while a webhook signing secret sealed under it is on its way to the
database must not leave that secret under the erased key.

A secret is sealed under the newest data key, read afresh, and its row written later,
through the writer queue: a backed-up queue or a stalled database can hold the write past
any wait, and a rewrap's pass seals a secret, then swaps it in, row by row. ``paygate keys
retire`` erases a key's bytes once nothing is under it. A secret written after that, under
the erased key, never opens again: every webhook of its endpoint fails to sign, for good
(its deliveries are retried, then given up).

So a secret's write is refused once its key is retired (the write and the retire serialize
on the key's row), and the secret sealed again under the newest key; and the retire counts
the secrets under the key itself, after locking that row.

The steps are forced by hand: the write waits until the operator has rotated (rewrapped)
and retired (SQLite and PostgreSQL); on PostgreSQL, a write whose transaction is still
open when the retire counts makes the retire wait for it, and refuse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from persistence.group_commit import Bulk, GroupCommit
from persistence.lock_order import RowLocks
from persistence.webhook_secrets import WebhookSecrets
from persistence.webhook_store import WebhookStore
from tests.integration.test_rate_limit_lock_order import two_engines  # noqa: F401
from tests.integration.test_vault_lock_order import _pause
from tests.integration.test_webhook_secret_rotation_race import stored_secrets
from tests.integration.test_writer_lock_order import _until_a_lock_wait
from tests.support.clock import Clock
from tests.support.held_writes import HeldWrites
from tests.support.vault_keys import FINGERPRINT_KEY, KEK_1
from vault.kek import LocalKeyEncryptionKeys
from vault.rows import VaultRows
from vault.vault import KeyInUseError, Vault

pytestmark = pytest.mark.integration

REFRESH_S = 30.0
URL = "https://hooks.example/a"


class _FirstWriteHeldOpen(GroupCommit):
    """A writer queue whose first write runs in a batch that then pauses, its transaction
    open, until the test resumes it."""

    def __init__(
        self, engine: AsyncEngine, pause: Callable[[AsyncConnection], Awaitable[None]]
    ) -> None:
        super().__init__(engine)
        self._pause: Callable[[AsyncConnection], Awaitable[None]] | None = pause

    async def run(
        self,
        operation: Callable[[AsyncConnection], Awaitable[Any]],
        bulk: Bulk | None = None,
        *,
        locks: RowLocks | None = None,
    ) -> Any:
        pause, self._pause = self._pause, None
        if pause is None:
            return await super().run(operation, bulk, locks=locks)
        result, _ = await asyncio.gather(
            super().run(operation, bulk, locks=locks), super().run(pause)
        )
        return result


def _vault(engine: AsyncEngine, clock: Clock) -> Vault:
    return Vault(
        VaultRows(engine),
        LocalKeyEncryptionKeys.from_text(KEK_1),
        FINGERPRINT_KEY,
        clock=clock,
        primary_refresh_s=REFRESH_S,
    )


class _Operator:
    """``paygate keys`` against ``engine``, as paygate/keys_command.py wires it."""

    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self.vault = _vault(engine, clock)
        self.secrets = WebhookSecrets(engine, GroupCommit(engine), self.vault)

    async def retire(self, key_id: str) -> None:
        """``paygate keys retire``: refused while a secret is counted under the key, then
        the vault's retire."""
        if await self.secrets.count_under(key_id):
            raise KeyInUseError(f"webhook secrets under {key_id}")
        await self.vault.retire(key_id)


async def _opened(engine: AsyncEngine, clock: Clock, endpoint_id: str) -> str:
    """The endpoint's secret as another process (no data key cached) opens it to sign."""
    secrets = WebhookSecrets(engine, GroupCommit(engine), _vault(engine, clock))
    [stored] = [s for e, _, s in await stored_secrets(engine) if e == endpoint_id]
    return await secrets.open(endpoint_id, stored)


async def test_an_endpoint_whose_insert_lands_after_its_key_is_retired_still_signs(
    engine: AsyncEngine,
) -> None:
    await an_endpoint_held_past_its_keys_retire_still_signs(engine, engine)


async def an_endpoint_held_past_its_keys_retire_still_signs(
    engine: AsyncEngine, vault_engine: AsyncEngine
) -> None:
    """A new endpoint's secret sealed under a key, its insert (through ``engine``) held
    until that key has been rotated past and retired by an operator: the write must be
    refused and sealed again, so the endpoint signs and nothing stays under the old key.
    ``vault_engine``: the facade's vault's engine (the same database, maybe spelt
    otherwise)."""
    clock = Clock()
    operator = _Operator(engine, clock)
    old_key = (await operator.vault.rotate()).key_id
    writes = HeldWrites(engine, held=0)
    facade = WebhookStore(engine, writes).with_secrets(_vault(vault_engine, clock))

    creating = asyncio.ensure_future(facade.create_endpoint("acme", URL, ["*"], None))
    await asyncio.wait_for(writes.queued.wait(), 10)  # sealed under old_key, not inserted

    clock.now += timedelta(seconds=1)
    await operator.vault.rotate()
    clock.now += timedelta(seconds=2 * REFRESH_S + 1)  # past the retire's time guard
    assert (await operator.secrets.rewrap()).moved == 0  # the endpoint's row is not there
    await operator.retire(old_key)  # nothing under it: its bytes are erased

    writes.release.set()
    created = await asyncio.wait_for(creating, 10)

    assert await _opened(engine, clock, created.endpoint.id) == created.secret
    assert await operator.secrets.count_under(old_key) == 0


async def test_a_secret_rewrap_begun_before_a_rotation_never_moves_a_secret_under_a_retired_key(
    engine: AsyncEngine,
) -> None:
    # A rewrap seals each secret under the newest key, then swaps it in. One whose swap is
    # held while the operator rotates past that key and retires it (nothing is under it
    # yet) wrote the secret under the erased key: the endpoint never signed again.
    clock = Clock()
    operator = _Operator(engine, clock)
    await operator.vault.rotate()
    store = WebhookStore(engine, GroupCommit(engine)).with_secrets(operator.vault)
    created = await store.create_endpoint("acme", URL, ["*"], None)
    clock.now += timedelta(seconds=1)
    stale_target = (await operator.vault.rotate()).key_id
    # Its first write erases deleted endpoints' secrets; its second is the swap.
    writes = HeldWrites(engine, held=1)
    stale = WebhookSecrets(engine, writes, _vault(engine, clock))

    rewrapping = asyncio.ensure_future(stale.rewrap())
    await asyncio.wait_for(writes.queued.wait(), 10)  # sealed under stale_target, not swapped
    clock.now += timedelta(seconds=1)
    await operator.vault.rotate()
    clock.now += timedelta(seconds=2 * REFRESH_S + 1)
    await operator.retire(stale_target)  # nothing under it: its bytes are erased
    writes.release.set()
    report = await asyncio.wait_for(rewrapping, 10)

    assert (report.moved, report.failed) == (1, 0)
    assert await _opened(engine, clock, created.endpoint.id) == created.secret
    assert await operator.secrets.count_under(stale_target) == 0


async def test_a_retire_waits_for_an_endpoint_written_under_its_key_and_refuses(
    two_engines: list[AsyncEngine],  # noqa: F811
) -> None:
    facade_engine, command_engine = two_engines
    clock = Clock()
    operator = _Operator(command_engine, clock)
    old_key = (await operator.vault.rotate()).key_id
    paused, resume, pause = _pause()
    facade = WebhookStore(facade_engine, _FirstWriteHeldOpen(facade_engine, pause)).with_secrets(
        _vault(facade_engine, clock)
    )

    # The facade's batch: the endpoint's insert under old_key, then the pause, uncommitted.
    creating = asyncio.ensure_future(facade.create_endpoint("acme", URL, ["*"], None))
    await asyncio.wait_for(paused.wait(), 10)
    clock.now += timedelta(seconds=1)
    await operator.vault.rotate()
    clock.now += timedelta(seconds=2 * REFRESH_S + 1)
    # The command's count comes first and sees no secret (the insert is not committed);
    # the retire's own count, after it locked the key's row, waits for the insert.
    retiring = asyncio.ensure_future(operator.retire(old_key))
    await _until_a_lock_wait(facade_engine, retiring)
    resume.set()
    created = await asyncio.wait_for(creating, 10)

    with pytest.raises(KeyInUseError):
        await retiring
    assert await _opened(facade_engine, clock, created.endpoint.id) == created.secret
