"""The sandbox's ledger in a SQLite file, through the stdlib driver on worker threads.

One connection serves every call; a lock serialises its use because calls arrive on
whichever thread ``asyncio.to_thread`` picks. Writes that check before they write (a
refund against what remains, a capture of an authorized charge) run in ``BEGIN
IMMEDIATE`` transactions, so they stay atomic when several processes share the file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Final, TypeVar

from domain.refunds import RefundReason
from providers.sandbox.ledger import ActionOutcome
from providers.sandbox.records import ChargeRecord, SandboxErrorCode, SandboxStatus
from providers.sandbox.refund_records import (
    RefundBehaviour,
    RefundRecord,
    SandboxRefundErrorCode,
    SandboxRefundStatus,
)

_T = TypeVar("_T")

_SCHEMA: Final = (
    """
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
""",
    """
CREATE TABLE IF NOT EXISTS refunds (
    idempotency_key   TEXT PRIMARY KEY,
    refund_id         TEXT NOT NULL UNIQUE,
    request_hash      TEXT NOT NULL,
    charge_id         TEXT NOT NULL,
    refund_reference  TEXT NOT NULL,
    payment_reference TEXT NOT NULL,
    amount_minor      INTEGER NOT NULL,
    currency          TEXT NOT NULL,
    reason            TEXT,
    status            TEXT NOT NULL,
    error_code        TEXT,
    created_at        TEXT NOT NULL,
    settles_at        TEXT
)
""",
    "CREATE INDEX IF NOT EXISTS refunds_by_charge ON refunds (charge_id)",
)

# Columns added to ``charges`` after ledgers were already on disk (the dev stack keeps one
# in a volume): added on open, with what an older row means.
_CHARGE_COLUMNS_ADDED: Final = (
    ("refund_behaviour", "TEXT NOT NULL DEFAULT 'succeed'", None),
    (
        "captured_minor",
        "INTEGER",
        "UPDATE charges SET captured_minor = CASE status WHEN 'succeeded' THEN amount_minor "
        "ELSE 0 END WHERE captured_minor IS NULL",
    ),
    ("capture_key", "TEXT", None),
    ("action_expires_at", "TEXT", None),
    ("after_action", "TEXT", None),
)

# Statements are constants and every value goes through a placeholder. ON CONFLICT names
# the key, so any other constraint failure still raises instead of passing for a replay.
_INSERT: Final = """
INSERT INTO charges (idempotency_key, charge_id, request_hash, payment_reference,
                     amount_minor, currency, payer_masked, status, error_code,
                     decline_code, created_at, refund_behaviour, captured_minor, capture_key,
                     action_expires_at, after_action)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(idempotency_key) DO NOTHING
"""

_SELECT: Final = """
SELECT idempotency_key, charge_id, request_hash, payment_reference, amount_minor, currency,
       payer_masked, status, error_code, decline_code, created_at, refund_behaviour,
       captured_minor, capture_key, action_expires_at, after_action
FROM charges
"""
_SELECT_ONE: Final = _SELECT + "WHERE idempotency_key = ?"
_SELECT_BY_ID: Final = _SELECT + "WHERE charge_id = ?"
_SELECT_ALL: Final = _SELECT + "ORDER BY rowid"
_CAPTURE: Final = """
UPDATE charges SET status = 'succeeded', captured_minor = ?, capture_key = ?
WHERE charge_id = ? AND status = 'authorized'
"""
# One statement, so the check that the payer has not acted yet and the write are atomic.
_FINISH_ACTION: Final = """
UPDATE charges SET status = ?, captured_minor = ?, error_code = ?, decline_code = ?
WHERE charge_id = ? AND status = 'requires_action'
"""

_RELEASE: Final = "UPDATE charges SET status = ? WHERE charge_id = ? AND status = 'authorized'"

_INSERT_REFUND: Final = """
INSERT INTO refunds (idempotency_key, refund_id, request_hash, charge_id, refund_reference,
                     payment_reference, amount_minor, currency, reason, status, error_code,
                     created_at, settles_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_SELECT_REFUND: Final = """
SELECT idempotency_key, refund_id, request_hash, charge_id, refund_reference,
       payment_reference, amount_minor, currency, reason, status, error_code, created_at,
       settles_at
FROM refunds
"""
_SELECT_REFUND_ONE: Final = _SELECT_REFUND + "WHERE idempotency_key = ?"
_SELECT_REFUND_ALL: Final = _SELECT_REFUND + "ORDER BY rowid"
_REFUNDED: Final = (
    "SELECT COALESCE(SUM(amount_minor), 0) FROM refunds WHERE charge_id = ? AND status != ?"
)
_SETTLE: Final = "UPDATE refunds SET status = ? WHERE idempotency_key = ? AND status = ?"

_Row = tuple[
    str,
    str,
    str,
    str,
    int,
    str,
    str,
    str,
    str | None,
    str | None,
    str,
    str,
    int,
    str | None,
    str | None,
    str | None,
]
_RefundRow = tuple[
    str, str, str, str, str, str, int, str, str | None, str, str | None, str, str | None
]


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
        record.refunds.value,
        record.captured_minor,
        record.capture_key,
        None if record.action_expires_at is None else record.action_expires_at.isoformat(),
        None if record.after_action is None else record.after_action.value,
    )


def _from_row(row: _Row) -> ChargeRecord:
    key, charge_id, request_hash, reference, amount, currency, masked, status, error = row[:9]
    decline, created, refunds, captured, capture_key, action_expires, after = row[9:]
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
        refunds=RefundBehaviour(refunds),
        captured_minor=captured,
        capture_key=capture_key,
        action_expires_at=None
        if action_expires is None
        else datetime.fromisoformat(action_expires),
        after_action=None if after is None else SandboxStatus(after),
    )


def _to_refund_row(record: RefundRecord) -> _RefundRow:
    return (
        record.idempotency_key,
        record.refund_id,
        record.request_hash,
        record.charge_id,
        record.refund_reference,
        record.payment_reference,
        record.amount_minor,
        record.currency,
        None if record.reason is None else record.reason.value,
        record.status.value,
        None if record.error_code is None else record.error_code.value,
        record.created_at.isoformat(),
        None if record.settles_at is None else record.settles_at.isoformat(),
    )


def _from_refund_row(row: _RefundRow) -> RefundRecord:
    key, refund_id, request_hash, charge_id, refund_ref, payment_ref, amount = row[:7]
    currency, reason, status, error, created, settles = row[7:]
    return RefundRecord(
        idempotency_key=key,
        refund_id=refund_id,
        request_hash=request_hash,
        charge_id=charge_id,
        refund_reference=refund_ref,
        payment_reference=payment_ref,
        amount_minor=amount,
        currency=currency,
        reason=None if reason is None else RefundReason(reason),
        status=SandboxRefundStatus(status),
        error_code=None if error is None else SandboxRefundErrorCode(error),
        created_at=datetime.fromisoformat(created),
        settles_at=None if settles is None else datetime.fromisoformat(settles),
    )


class SqliteLedger:
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
        return await self._run(lambda db: self._get(db, _SELECT_ONE, idempotency_key))

    async def get_by_charge_id(self, charge_id: str) -> ChargeRecord | None:
        return await self._run(lambda db: self._get(db, _SELECT_BY_ID, charge_id))

    async def insert_if_absent(self, record: ChargeRecord) -> ChargeRecord:
        def insert(db: sqlite3.Connection) -> ChargeRecord:
            db.execute(_INSERT, _to_row(record))
            stored = self._get(db, _SELECT_ONE, record.idempotency_key)
            # Rows are never deleted, so the key's row exists once the insert has run.
            assert stored is not None
            return stored

        return await self._run(insert)

    async def all(self) -> list[ChargeRecord]:
        return await self._run(lambda db: [_from_row(row) for row in db.execute(_SELECT_ALL)])

    async def capture(
        self, charge_id: str, capture_key: str, amount_minor: int
    ) -> ChargeRecord | None:
        def capture(db: sqlite3.Connection) -> ChargeRecord | None:
            # One statement: the status check and the write are atomic without a transaction.
            db.execute(_CAPTURE, (amount_minor, capture_key, charge_id))
            return self._get(db, _SELECT_BY_ID, charge_id)

        return await self._run(capture)

    async def finish_action(self, charge_id: str, outcome: ActionOutcome) -> ChargeRecord | None:
        def finish(db: sqlite3.Connection) -> ChargeRecord | None:
            db.execute(
                _FINISH_ACTION,
                (
                    outcome.status.value,
                    outcome.captured_minor,
                    None if outcome.error_code is None else outcome.error_code.value,
                    outcome.decline_code,
                    charge_id,
                ),
            )
            return self._get(db, _SELECT_BY_ID, charge_id)

        return await self._run(finish)

    async def release(self, charge_id: str, status: SandboxStatus) -> ChargeRecord | None:
        def release(db: sqlite3.Connection) -> ChargeRecord | None:
            # One statement: the status check and the write are atomic, as for a capture.
            db.execute(_RELEASE, (status.value, charge_id))
            return self._get(db, _SELECT_BY_ID, charge_id)

        return await self._run(release)

    async def get_refund(self, idempotency_key: str) -> RefundRecord | None:
        return await self._run(lambda db: self._get_refund(db, idempotency_key))

    async def insert_refund_if_absent(
        self, record: RefundRecord, limit_minor: int
    ) -> RefundRecord | None:
        def insert(db: sqlite3.Connection) -> RefundRecord | None:
            # IMMEDIATE takes the write lock first, so another process cannot add a refund
            # between our sum and our insert.
            db.execute("BEGIN IMMEDIATE")
            try:
                stored = self._get_refund(db, record.idempotency_key)
                if stored is None:
                    (taken,) = db.execute(
                        _REFUNDED, (record.charge_id, SandboxRefundStatus.FAILED.value)
                    ).fetchone()
                    if taken + record.amount_minor <= limit_minor:
                        db.execute(_INSERT_REFUND, _to_refund_row(record))
                        stored = record
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return stored

        return await self._run(insert)

    async def settle_refund(self, idempotency_key: str) -> RefundRecord | None:
        def settle(db: sqlite3.Connection) -> RefundRecord | None:
            db.execute(
                _SETTLE,
                (
                    SandboxRefundStatus.SUCCEEDED.value,
                    idempotency_key,
                    SandboxRefundStatus.PENDING.value,
                ),
            )
            return self._get_refund(db, idempotency_key)

        return await self._run(settle)

    async def refunds(self) -> list[RefundRecord]:
        return await self._run(
            lambda db: [_from_refund_row(row) for row in db.execute(_SELECT_REFUND_ALL)]
        )

    @staticmethod
    def _get(db: sqlite3.Connection, select: str, value: str) -> ChargeRecord | None:
        row = db.execute(select, (value,)).fetchone()
        return None if row is None else _from_row(row)

    @staticmethod
    def _get_refund(db: sqlite3.Connection, idempotency_key: str) -> RefundRecord | None:
        row = db.execute(_SELECT_REFUND_ONE, (idempotency_key,)).fetchone()
        return None if row is None else _from_refund_row(row)

    def _open(self) -> None:
        with self._lock:
            if self._connection is not None:
                return
            # isolation_level=None: autocommit, so each INSERT is its own atomic transaction.
            db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            try:
                db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
                db.execute("PRAGMA journal_mode = WAL")
                for statement in _SCHEMA:
                    db.execute(statement)
                _add_missing_columns(db)
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


def _add_missing_columns(db: sqlite3.Connection) -> None:
    present = {row[1] for row in db.execute("PRAGMA table_info(charges)")}
    for name, definition, backfill in _CHARGE_COLUMNS_ADDED:
        if name in present:
            continue
        # Names and definitions are the constants above, never input.
        try:
            db.execute(f"ALTER TABLE charges ADD COLUMN {name} {definition}")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):
                raise
            continue  # another process sharing the file added it first
        if backfill is not None:
            db.execute(backfill)
