"""The database side of a model-based test: a log of every status change, a fresh start
for each example, and snapshots for tests.support.payment_model.

The log is written by triggers, in the transaction that changes the status, so it sees
every change the stores make (several may happen within one step of the test), not only
the status each step ends at.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.refunds import RefundStatus
from domain.status import PaymentStatus
from persistence.engine import write_transaction
from persistence.tables import outbox, payments, provider_attempts, refunds, stray_charges
from persistence.vault_tables import vault_entries
from tests.support.payment_model import (
    Snapshot,
    StatusChange,
    StoredAttempt,
    StoredPayment,
    StoredRefund,
    StoredStray,
)

_SQLITE = [
    "CREATE TABLE model_status_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT NULL,"
    " row_id TEXT NOT NULL, old_status TEXT, new_status TEXT NOT NULL)",
    "CREATE TRIGGER model_status_log_payments_insert AFTER INSERT ON payments BEGIN"
    " INSERT INTO model_status_log (tbl, row_id, old_status, new_status)"
    " VALUES ('payments', NEW.id, NULL, NEW.status); END",
    "CREATE TRIGGER model_status_log_payments_update AFTER UPDATE OF status ON payments"
    " WHEN OLD.status IS NOT NEW.status BEGIN"
    " INSERT INTO model_status_log (tbl, row_id, old_status, new_status)"
    " VALUES ('payments', NEW.id, OLD.status, NEW.status); END",
    "CREATE TRIGGER model_status_log_refunds_insert AFTER INSERT ON refunds BEGIN"
    " INSERT INTO model_status_log (tbl, row_id, old_status, new_status)"
    " VALUES ('refunds', NEW.id, NULL, NEW.status); END",
    "CREATE TRIGGER model_status_log_refunds_update AFTER UPDATE OF status ON refunds"
    " WHEN OLD.status IS NOT NEW.status BEGIN"
    " INSERT INTO model_status_log (tbl, row_id, old_status, new_status)"
    " VALUES ('refunds', NEW.id, OLD.status, NEW.status); END",
]

_POSTGRESQL = [
    "CREATE TABLE model_status_log (seq BIGSERIAL PRIMARY KEY, tbl TEXT NOT NULL,"
    " row_id TEXT NOT NULL, old_status TEXT, new_status TEXT NOT NULL)",
    "CREATE FUNCTION model_status_log_write() RETURNS trigger AS $$ BEGIN"
    " IF TG_OP = 'INSERT' THEN"
    " INSERT INTO model_status_log (tbl, row_id, old_status, new_status)"
    " VALUES (TG_TABLE_NAME, NEW.id, NULL, NEW.status);"
    " ELSIF OLD.status IS DISTINCT FROM NEW.status THEN"
    " INSERT INTO model_status_log (tbl, row_id, old_status, new_status)"
    " VALUES (TG_TABLE_NAME, NEW.id, OLD.status, NEW.status);"
    " END IF; RETURN NULL; END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER model_status_log_payments AFTER INSERT OR UPDATE ON payments"
    " FOR EACH ROW EXECUTE FUNCTION model_status_log_write()",
    "CREATE TRIGGER model_status_log_refunds AFTER INSERT OR UPDATE ON refunds"
    " FOR EACH ROW EXECUTE FUNCTION model_status_log_write()",
]


def _aware(at: datetime) -> datetime:
    """SQLite hands back naive datetimes; every one this schema stores is UTC."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


async def install_status_log(engine: AsyncEngine) -> None:
    """Create the log and its triggers (once per database)."""
    statements = _POSTGRESQL if engine.dialect.name == "postgresql" else _SQLITE
    async with write_transaction(engine) as conn:
        for statement in statements:
            await conn.execute(text(statement))


async def reset(engine: AsyncEngine) -> None:
    """Empty the tables a model test writes, so that each example starts from nothing."""
    async with write_transaction(engine) as conn:
        for table in (outbox, stray_charges, refunds, provider_attempts, payments, vault_entries):
            await conn.execute(table.delete())
        await conn.execute(text("DELETE FROM model_status_log"))


async def snapshot(engine: AsyncEngine) -> Snapshot:
    async with engine.connect() as conn:
        payment_rows = (await conn.execute(payments.select())).all()
        refund_rows = (await conn.execute(refunds.select())).all()
        attempt_rows = (await conn.execute(provider_attempts.select())).all()
        stray_rows = (await conn.execute(stray_charges.select())).all()
        log_rows = (
            await conn.execute(
                text(
                    "SELECT seq, tbl, row_id, old_status, new_status FROM model_status_log"
                    " ORDER BY seq"
                )
            )
        ).all()
    return Snapshot(
        payments={
            r.id: StoredPayment(
                id=r.id,
                status=PaymentStatus(r.status),
                amount_minor=r.amount_minor,
                refunded_minor=r.refunded_minor,
                reserved_minor=r.refund_reserved_minor,
                provider=r.provider,
                provider_reference=r.provider_reference,
                claim_token=r.claim_token,
                captured_minor=r.captured_minor,
                refunded_outside_minor=r.refunded_outside_minor,
            )
            for r in payment_rows
        },
        refunds={
            r.id: StoredRefund(
                id=r.id,
                payment_id=r.payment_id,
                status=RefundStatus(r.status),
                amount_minor=r.amount_minor,
                provider=r.provider,
                claim_token=r.claim_token,
                created_at=_aware(r.created_at),
            )
            for r in refund_rows
        },
        attempts={
            r.attempt_key: StoredAttempt(
                key=r.attempt_key,
                payment_id=r.payment_id,
                provider=r.provider,
                status=r.status,
                open=r.finished_at is None,
                verified=r.verified_at is not None,
                provider_reference=r.provider_reference,
                started_at=_aware(r.created_at),
                finished_at=None if r.finished_at is None else _aware(r.finished_at),
            )
            for r in attempt_rows
        },
        strays={
            r.attempt_key: StoredStray(
                r.attempt_key,
                r.payment_id,
                r.status,
                provider=r.provider,
                provider_reference=r.provider_reference,
                claim_token=r.claim_token,
            )
            for r in stray_rows
        },
        changes=[
            StatusChange(r.seq, r.tbl, r.row_id, r.old_status, r.new_status) for r in log_rows
        ],
    )
