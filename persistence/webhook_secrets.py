"""Webhook signing secrets, encrypted at rest under the vault's data keys.

A signing secret is an HMAC key: whoever reads it can sign webhooks its client trusts. So
the database never keeps it in clear, or a backup, a replica or a read-only role would be
enough to forge them. An endpoint row holds ``secret_key_id`` (a vault data key) and
``secret_ciphertext`` (:mod:`vault.cipher`'s format: AES-256-GCM, a fresh nonce, the key id
in its header), bound to the endpoint's id: a ciphertext copied to another endpoint's row
does not open. The dispatcher opens it for each attempt, just before signing; nothing
else opens it, and the clear secret is shown once, in the answer that creates the endpoint.

Invariants:

* New endpoints are written sealed; their ``secret`` (clear) column is null.
* A clear ``secret`` is only on a row written before revision 0017 (or by a process of the
  previous release during an upgrade). :meth:`WebhookSecrets.seal_clear`, which every
  process that opens the vault runs at start and ``paygate keys rewrap`` runs too, seals
  it and nulls the clear column in one write, conditional on the clear value being the
  one it sealed (so concurrent starts seal each row once).
* A deleted endpoint holds no secret, clear or sealed: :meth:`WebhookStore.delete_endpoint
  <persistence.webhook_store.WebhookStore.delete_endpoint>` erases it in the write that
  deletes the endpoint (the row stays: its deliveries' history refers to it), and
  :meth:`WebhookSecrets.seal_clear` erases any an earlier release left on a deleted
  endpoint. Nothing is ever signed for a deleted endpoint, and a secret kept would only be
  one more to leak from a backup.
* The statements that bind a clear secret (sealing a clear one, writing one back in clear)
  raise errors that do not print their parameters: a database error's text reaches the
  logs, and would otherwise carry the secret there.
* Rotation is the vault's: ``paygate keys rewrap`` moves every secret under the newest
  data key (:meth:`WebhookSecrets.rewrap`), and ``paygate keys retire`` refuses a key a
  secret is still under (:meth:`WebhookSecrets.count_under`, and the retire's own count).
* A secret is written only under a live data key: every write of a sealed secret (a new
  endpoint's, a seal or a rewrap's swap: :meth:`WebhookSecrets.write_sealed`) reads its
  key's row in its own transaction and is refused once the key is retired, and the secret
  sealed again under the newest key; the retire locks that row before counting the
  secrets under the key (persistence.vault_key_guard). A seal and its write can be far
  apart (a backed-up writer queue, a stalled database, a rewrap begun before a rotation),
  and a secret written under an erased key would never sign again. With a vault database
  of its own, the key's row is not in this database: only ``paygate keys retire``'s count
  before the retire, and its time guard, stand between them (docs/security.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, Protocol, TypeVar

from sqlalchemy import ColumnElement, Row, func, or_, select, update
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.errors import ErrorCode, PaygateError
from persistence.group_commit import GroupCommit
from persistence.lock_order import RowLocks
from persistence.vault_key_guard import KeyRetiredError, require_live_keys
from persistence.webhook_tables import webhook_endpoints

# id, secret (in clear, before sealing), secret_key_id, secret_ciphertext
_EndpointRow = Row[str, str | None, str | None, bytes | None]

WHAT: Final = "the webhook signing secret"
_CONTEXT: Final = b"webhook signing secret\x1f"
# A write refused because its key was retired meanwhile is sealed again under the newest
# key, read afresh; a second refusal (another retire within the same write) is an error,
# not a loop.
_SEALS_PER_WRITE: Final = 2

T = TypeVar("T")
# A write of a sealed secret: the connection, the key id and the ciphertext to store.
SealedWrite = Callable[[AsyncConnection, str, bytes], Awaitable[T]]


class SecretKeys(Protocol):
    """What sealing needs of the vault (:class:`vault.vault.Vault` is one)."""

    async def seal(self, plain: bytes, context: bytes) -> tuple[str, bytes]: ...

    async def unseal(
        self, key_id: str, ciphertext: bytes, context: bytes, *, what: str
    ) -> bytes: ...

    async def newest_key_id(self) -> str: ...

    async def keys_beside(self, engine: AsyncEngine) -> bool: ...


@dataclass(frozen=True, slots=True)
class StoredSecret:
    """A signing secret as its endpoint row holds it: sealed, or (before 0017) clear."""

    key_id: str | None
    ciphertext: bytes | None = field(repr=False)
    clear: str | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class SecretRewrapReport:
    sealed: int  # clear secrets sealed
    moved: int  # sealed ones moved to the newest data key
    failed: int  # ones that do not open: left as they are, for a person to look at


def erased_secret() -> dict[str, None]:
    """The column values of an endpoint that holds no secret (a deleted one)."""
    return {"secret": None, "secret_key_id": None, "secret_ciphertext": None}


def _context(endpoint_id: str) -> bytes:
    return _CONTEXT + endpoint_id.encode()


@contextlib.contextmanager
def _parameters_hidden() -> Iterator[None]:
    """For a statement that binds a clear secret: its error does not print its parameters.

    SQLAlchemy's text of a failed statement lists them, and that text reaches the logs (the
    housekeeping's traceback of an unexplained failure, a start or a command that fails).
    """
    try:
        yield
    except StatementError as exc:
        exc.hide_parameters = True
        raise


class WebhookSecrets:
    def __init__(
        self, engine: AsyncEngine, writes: GroupCommit, keys: SecretKeys, *, batch: int = 500
    ) -> None:
        self._engine = engine
        self._writes = writes
        self._keys = keys
        self._batch = batch

    async def seal(self, endpoint_id: str, secret: str) -> tuple[str, bytes]:
        """The key id and ciphertext to store for ``secret`` on ``endpoint_id``'s row."""
        return await self._keys.seal(secret.encode(), _context(endpoint_id))

    async def write_sealed(
        self,
        endpoint_id: str,
        secret: str,
        write: SealedWrite[T],
        *,
        locks: RowLocks,
    ) -> T:
        """``secret`` sealed under the newest data key and written by ``write`` in a
        transaction of the writer queue (declaring ``locks``), which first checks that the
        key is still live: a write refused because the key was retired since the seal is
        sealed and made again (``encryption_key_unknown`` if refused twice). Without the
        check, a write landing after the key's retire left the secret under an erased key.
        """
        guarded = await self._keys.keys_beside(self._engine)
        for _ in range(_SEALS_PER_WRITE):
            key_id, ciphertext = await self.seal(endpoint_id, secret)
            try:
                return await self._writes.run(
                    _under_live_key(write, key_id, ciphertext, guarded=guarded), locks=locks
                )
            except KeyRetiredError:
                continue
        raise PaygateError(
            ErrorCode.ENCRYPTION_KEY_UNKNOWN,
            f"no data key with id {key_id!r}: retired while {WHAT} was written under it",
        )

    async def open(self, endpoint_id: str, stored: StoredSecret) -> str:
        """The clear secret, for signing only: never store, log or show it. Catalogue
        errors (vault.errors) when it does not open: its key unknown or retired
        (``encryption_key_unknown``), or the row altered (``account_data_tampered``)."""
        if stored.key_id is not None and stored.ciphertext is not None:
            plain = await self._keys.unseal(
                stored.key_id, stored.ciphertext, _context(endpoint_id), what=WHAT
            )
            return plain.decode()
        if stored.clear is not None:
            return stored.clear  # not sealed yet: the next start or rewrap seals it
        raise ValueError(f"webhook endpoint {endpoint_id} has no signing secret")

    async def seal_clear(self) -> int:
        """Seal every secret still in clear; how many were sealed here. Deleted endpoints'
        secrets are erased first (:meth:`erase_deleted`), not sealed."""
        await self.erase_deleted()
        sealed = 0
        async for row in self._endpoints(webhook_endpoints.c.secret.is_not(None)):
            condition = webhook_endpoints.c.secret == row.secret
            if await self._swap(row.id, condition, row.secret):
                sealed += 1
        return sealed

    async def rewrap(self) -> SecretRewrapReport:
        """Every secret sealed under the newest data key (clear ones sealed first). Safe
        while paygate runs: each row is swapped in its own write, only if unchanged."""
        sealed = await self.seal_clear()
        target = await self._keys.newest_key_id()
        moved = failed = 0
        e = webhook_endpoints
        async for row in self._endpoints(
            e.c.secret_key_id.is_not(None), e.c.secret_key_id != target
        ):
            secret = await self._opened(row)
            if secret is None:  # counted, left for a person
                failed += 1
                continue
            condition = e.c.secret_key_id == row.secret_key_id
            try:
                swapped = await self._swap(row.id, condition, secret)
            except PaygateError as exc:
                if exc.code is not ErrorCode.ENCRYPTION_KEY_UNKNOWN:
                    raise
                failed += 1  # refused twice (retired twice meanwhile): left as it is
                continue
            if swapped:
                moved += 1
        return SecretRewrapReport(sealed, moved, failed)

    async def unseal_all(self) -> tuple[int, int]:
        """Write every sealed secret back in clear (how many, and how many did not open):
        only for a downgrade below revision 0017, with paygate stopped, since a process
        that starts again seals them at once."""
        unsealed = failed = 0
        async for row in self._endpoints(webhook_endpoints.c.secret_key_id.is_not(None)):
            secret = await self._opened(row)
            if secret is None:
                failed += 1
                continue
            if await self._write_clear(row.id, row.secret_key_id, secret):
                unsealed += 1
        return unsealed, failed

    async def _endpoints(self, *where: ColumnElement[bool]) -> AsyncIterator[_EndpointRow]:
        """The endpoints matching ``where``, in id order, read a page of ``batch`` at a
        time (each page on a connection of its own, so the writes between pages see no
        transaction held open)."""
        e = webhook_endpoints
        after = ""
        while True:
            async with self._engine.connect() as conn:
                rows = (
                    await conn.execute(
                        select(e.c.id, e.c.secret, e.c.secret_key_id, e.c.secret_ciphertext)
                        .where(*where)
                        .where(e.c.id > after)
                        .order_by(e.c.id)
                        .limit(self._batch)
                    )
                ).all()
            if not rows:
                return
            for row in rows:
                yield row
            after = rows[-1].id

    async def _opened(self, row: _EndpointRow) -> str | None:
        """The sealed secret of ``row`` in clear, or None when it does not open."""
        stored = StoredSecret(row.secret_key_id, row.secret_ciphertext, None)
        try:
            return await self.open(row.id, stored)
        except (PaygateError, UnicodeDecodeError):
            return None

    async def erase_deleted(self) -> int:
        """Erase the secrets deleted endpoints still hold (deleted by a release that kept
        them); how many were erased."""
        e = webhook_endpoints
        holds_one = or_(
            e.c.secret.is_not(None),
            e.c.secret_key_id.is_not(None),
            e.c.secret_ciphertext.is_not(None),
        )

        async def record(conn: AsyncConnection) -> int:
            result = await conn.execute(
                update(e)
                .where(e.c.deleted_at.is_not(None))
                .where(holds_one)
                .values(**erased_secret())
            )
            return int(result.rowcount)

        return await self._writes.run(record)

    async def count_under(self, key_id: str) -> int:
        """How many endpoints have their secret under ``key_id`` (deleted ones hold none)."""
        async with self._engine.connect() as conn:
            count = await conn.scalar(
                select(func.count())
                .select_from(webhook_endpoints)
                .where(webhook_endpoints.c.secret_key_id == key_id)
            )
            return int(count or 0)

    async def _swap(self, endpoint_id: str, unchanged: ColumnElement[bool], secret: str) -> bool:
        """``secret`` sealed into ``endpoint_id``'s row, if ``unchanged`` still holds."""

        async def record(conn: AsyncConnection, key_id: str, ciphertext: bytes) -> bool:
            with _parameters_hidden():  # ``unchanged`` may compare the clear secret
                result = await conn.execute(
                    update(webhook_endpoints)
                    .where(webhook_endpoints.c.id == endpoint_id)
                    .where(unchanged)
                    .values(secret=None, secret_key_id=key_id, secret_ciphertext=ciphertext)
                )
            return bool(result.rowcount)

        return await self.write_sealed(
            endpoint_id, secret, record, locks=RowLocks.of(endpoints=[endpoint_id])
        )

    async def _write_clear(self, endpoint_id: str, key_id: str, secret: str) -> bool:
        async def record(conn: AsyncConnection) -> bool:
            with _parameters_hidden():
                result = await conn.execute(
                    update(webhook_endpoints)
                    .where(webhook_endpoints.c.id == endpoint_id)
                    .where(webhook_endpoints.c.secret_key_id == key_id)
                    .values(secret=secret, secret_key_id=None, secret_ciphertext=None)
                )
            return bool(result.rowcount)

        return await self._writes.run(record, locks=RowLocks.of(endpoints=[endpoint_id]))


def _under_live_key(
    write: SealedWrite[T], key_id: str, ciphertext: bytes, *, guarded: bool
) -> Callable[[AsyncConnection], Awaitable[T]]:
    """``write`` of ``ciphertext``, after reading ``key_id``'s row ``FOR KEY SHARE``
    (KeyRetiredError if it is retired) when the key rows are in this database
    (``guarded``); the read comes after the write's declared locks, and closes no cycle
    (persistence.vault_key_guard)."""

    async def run(conn: AsyncConnection) -> T:
        if guarded:
            await require_live_keys(conn, [key_id])
        return await write(conn, key_id, ciphertext)

    return run
