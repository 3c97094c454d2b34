"""The sandbox's ledger: every charge it made or declined, one row per idempotency key.

The ledger is what chaos runs count, so inserting is atomic with the key check: the first
row stored under a key wins and every other writer gets that row back to replay.
:class:`MemoryLedger` serves in-process use; :class:`SqliteLedger` survives restarts and can
be shared by several processes (WAL, busy timeout).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Final, Protocol, TypeVar

from providers.sandbox.records import ChargeRecord, SandboxErrorCode, SandboxStatus

_T = TypeVar("_T")


class Ledger(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Release resources; safe to call twice."""
        ...

    async def get(self, idempotency_key: str) -> ChargeRecord | None: ...

    async def insert_if_absent(self, record: ChargeRecord) -> ChargeRecord:
        """Store ``record`` unless its key is taken; return the row now stored under the key.

        The caller compares the returned row's ``charge_id`` with its own to know whether
        it won.
        """
        ...

    async def all(self) -> list[ChargeRecord]:
        """Every row, oldest first."""
        ...


class MemoryLedger:
    """A dict. Check and insert run without an ``await`` between them, hence atomically."""

    def __init__(self) -> None:
        self._rows: dict[str, ChargeRecord] = {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def get(self, idempotency_key: str) -> ChargeRecord | None:
        return self._rows.get(idempotency_key)

    async def insert_if_absent(self, record: ChargeRecord) -> ChargeRecord:
        return self._rows.setdefault(record.idempotency_key, record)

    async def all(self) -> list[ChargeRecord]:
        return list(self._rows.values())


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS charges (
    idempotency_key   TEXT PRIMARY KEY,
    charge_id         TEXT NOT NULL UNIQUE,
    request_hash      TEXT NOT NULL,
    payment_reference TEXT NOT NULL,
    amount_minor      INTEGER NOT NULL,
    currency          TEXT NOT NULL,
    payer_masked      TEXT NOT NULL,
    status            TEXT NOT NULL,
    error_code        TEXT,
    decline_code      TEXT,
    created_at        TEXT NOT NULL
)
"""

# Statements are constants and every value goes through a placeholder. ON CONFLICT names
# the key, so any other constraint failure still raises instead of passing for a replay.
_INSERT: Final = """
INSERT INTO charges (idempotency_key, charge_id, request_hash, payment_reference,
                     amount_minor, currency, payer_masked, status, error_code,
                     decline_code, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(idempotency_key) DO NOTHING
"""

_SELECT: Final = """
SELECT idempotency_key, charge_id, request_hash, payment_reference, amount_minor, currency,
       payer_masked, status, error_code, decline_code, created_at
FROM charges
"""
_SELECT_ONE: Final = _SELECT + "WHERE idempotency_key = ?"
_SELECT_ALL: Final = _SELECT + "ORDER BY rowid"

_Row = tuple[str, str, str, str, int, str, str, str, str | None, str | None, str]


def _to_row(record: ChargeRecord) -> _Row:
    return (
        record.idempotency_key,
        record.charge_id,
        record.request_hash,
        record.payment_reference,
        record.amount_minor,
        record.currency,
        record.payer_masked,
        record.status.value,
        None if record.error_code is None else record.error_code.value,
        record.decline_code,
        record.created_at.isoformat(),
    )


def _from_row(row: _Row) -> ChargeRecord:
    key, charge_id, request_hash, reference, amount, currency, masked, status, error = row[:9]
    decline, created = row[9:]
    return ChargeRecord(
        idempotency_key=key,
        charge_id=charge_id,
        request_hash=request_hash,
        payment_reference=reference,
        amount_minor=amount,
        currency=currency,
        payer_masked=masked,
        status=SandboxStatus(status),
        error_code=None if error is None else SandboxErrorCode(error),
        decline_code=decline,
        created_at=datetime.fromisoformat(created),
    )


class SqliteLedger:
    """The ledger in a SQLite file, through the stdlib driver on worker threads.

    One connection serves every call; a lock serialises its use because calls arrive on
    whichever thread ``asyncio.to_thread`` picks.
    """

    def __init__(self, path: str, *, busy_timeout_ms: int = 5000) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self._open)

    async def stop(self) -> None:
        await asyncio.to_thread(self._close)

    async def get(self, idempotency_key: str) -> ChargeRecord | None:
        return await self._run(lambda db: self._get(db, idempotency_key))

    async def insert_if_absent(self, record: ChargeRecord) -> ChargeRecord:
        def insert(db: sqlite3.Connection) -> ChargeRecord:
            db.execute(_INSERT, _to_row(record))
            stored = self._get(db, record.idempotency_key)
            # Rows are never deleted, so the key's row exists once the insert has run.
            assert stored is not None
            return stored

        return await self._run(insert)

    async def all(self) -> list[ChargeRecord]:
        return await self._run(lambda db: [_from_row(row) for row in db.execute(_SELECT_ALL)])

    @staticmethod
    def _get(db: sqlite3.Connection, idempotency_key: str) -> ChargeRecord | None:
        row = db.execute(_SELECT_ONE, (idempotency_key,)).fetchone()
        return None if row is None else _from_row(row)

    def _open(self) -> None:
        with self._lock:
            if self._connection is not None:
                return
            # isolation_level=None: autocommit, so each INSERT is its own atomic transaction.
            db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            try:
                db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
                db.execute("PRAGMA journal_mode = WAL")
                db.execute(_SCHEMA)
            except BaseException:
                db.close()
                raise
            self._connection = db

    def _close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        def locked() -> _T:
            with self._lock:
                if self._connection is None:
                    raise RuntimeError("SqliteLedger is not started")
                return work(self._connection)

        return await asyncio.to_thread(locked)
