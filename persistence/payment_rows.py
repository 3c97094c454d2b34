"""Payment rows: how a payment is written and read back, shared by the payment writes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import bindparam, case, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.accounts import AccountRef, AccountType
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.next_action import NextAction, NextActionType
from domain.payment_view import PaymentView
from domain.payments import CreatePayment, PaymentMethod
from domain.status import PaymentStatus
from persistence.engine import as_utc
from persistence.tables import payments

# Built once: SQLAlchemy memoizes a statement's cache key on the statement object, so a
# statement made per call (with the value inlined) recomputes the key of every one of the
# table's columns each time, which profiling found to be the facade's largest CPU cost.
_PAYMENT_BY_ID: Final = select(payments).where(payments.c.id == bindparam("payment_id"))


def captured_minor_of(table: Any) -> Any:
    """SQL: what the payment's capture took, in minor units (the whole amount unless a
    partial capture took less): the ceiling of its refunds."""
    return func.coalesce(table.c.captured_minor, table.c.amount_minor)


def status_with_refunds_of(table: Any, refunded: Any) -> Any:
    """SQL: the status of the captured payment of ``table`` once ``refunded`` (SQL: its
    refunded total after the write) has been refunded; the statement's twin of
    domain.provider_refunds.status_with_refunds, for the writes that compute the total in
    the database (under the row's lock) rather than read it first."""
    return case(
        (refunded <= 0, PaymentStatus.SUCCEEDED.value),
        (refunded >= captured_minor_of(table), PaymentStatus.REFUNDED.value),
        else_=PaymentStatus.PARTIALLY_REFUNDED.value,
    )


def refunded_at_provider_to(total: Any) -> dict[str, Any]:
    """SET values that make the payment's refunded total ``total`` (SQL or an int) on its
    provider's word: the rise is refunded outside paygate, with no refund row, and is added
    to ``refunded_outside_minor`` too, so refunded_minor stays the sum of the succeeded
    refund rows and that column (domain.provider_refunds). Both read the row's values
    before the update."""
    return {
        "refunded_minor": total,
        "refunded_outside_minor": (
            payments.c.refunded_outside_minor + total - payments.c.refunded_minor
        ),
    }


async def payment_in(conn: AsyncConnection, payment_id: str) -> PaymentView | None:
    """The payment as ``conn`` sees it (in its transaction, if it has one)."""
    row = (await conn.execute(_PAYMENT_BY_ID, {"payment_id": payment_id})).one_or_none()
    return None if row is None else payment_view_of(row._mapping)


def payment_view_of(row: Any) -> PaymentView:
    error = (
        None
        if row["error_code"] is None
        else ErrorInfo(
            code=ErrorCode(row["error_code"]),
            message=row["error_message"] or "",
            param=row["error_param"],
            decline_code=row["decline_code"],
        )
    )
    return PaymentView(
        payment_request_id=row["id"],
        order_id=row["order_id"],
        user_id=row["user_id"],
        idempotency_key=row["idempotency_key"],
        status=PaymentStatus(row["status"]),
        amount=Money(row["amount_minor"], row["currency"]),
        payment_method=PaymentMethod(row["payment_method"]),
        payer=AccountRef(
            AccountType(row["payer_type"]), row["payer_masked"], row["payer_fingerprint"]
        ),
        payee=AccountRef(
            AccountType(row["payee_type"]), row["payee_masked"], row["payee_fingerprint"]
        ),
        provider=row["provider"],
        provider_reference=row["provider_reference"],
        error=error,
        created_at=as_utc(row["created_at"]),
        updated_at=as_utc(row["updated_at"]),
        parameters_hash=row["parameters_hash"],
        next_retry_at=None if row["next_retry_at"] is None else as_utc(row["next_retry_at"]),
        client_id=row["client_id"],
        refunded_minor=row["refunded_minor"],
        refund_reserved_minor=row["refund_reserved_minor"],
        next_action=_next_action_of(row),
        captured_minor=row["captured_minor"],
    )


def _next_action_of(row: Any) -> NextAction | None:
    if row["next_action_type"] is None:
        return None
    return NextAction.of(
        NextActionType(row["next_action_type"]),
        row["next_action_target"],
        as_utc(row["next_action_expires_at"]),
    )


def next_action_columns(action: NextAction | None) -> dict[str, Any]:
    """The payment's next-action columns set to ``action`` (None: cleared)."""
    return {
        "next_action_type": None if action is None else action.type.value,
        "next_action_target": None if action is None else action.target,
        "next_action_expires_at": None if action is None else action.expires_at,
    }


def new_payment_row(
    command: CreatePayment,
    parameters_hash: str,
    account_key: bytes,
    provider: str,
    now: datetime,
) -> dict[str, Any]:
    payer = command.payer.ref(account_key)
    payee = command.payee.ref(account_key)
    return {
        "id": command.payment_request_id,
        "order_id": command.order_id,
        "client_id": command.client_id,
        "user_id": command.user_id,
        "idempotency_key": command.idempotency_key,
        "key_generation": command.generation,
        "key_expired": False,
        "parameters_hash": parameters_hash,
        "amount_minor": command.amount.minor_units,
        "currency": command.amount.currency,
        "payment_method": command.payment_method.value,
        "payer_type": payer.type.value,
        "payer_masked": payer.masked,
        "payer_fingerprint": payer.fingerprint,
        "payee_type": payee.type.value,
        "payee_masked": payee.masked,
        "payee_fingerprint": payee.fingerprint,
        "metadata": dict(command.metadata),
        "provider": provider,
        "created_at": now,
        "updated_at": now,
    }


def error_columns(error: PaygateError | ErrorInfo | None) -> dict[str, Any]:
    return {
        "error_code": None if error is None else error.code.value,
        "error_message": None if error is None else error.message,
        "error_param": None if error is None else error.param,
        "decline_code": None if error is None else error.decline_code,
    }


async def insert_rows(conn: AsyncConnection, table: Any, rows: list[dict[str, Any]]) -> None:
    # A list of parameter sets is one executemany: one hop to the driver (aiosqlite's
    # thread; asyncpg pipelines the rows), whatever the number of rows. SQLAlchemy takes the
    # columns of such an insert from the first row and silently drops another row's extra
    # keys, so rows of differing shapes would lose values: refused before anything is sent.
    if not rows:
        return
    columns = rows[0].keys()
    for row in rows:
        if row.keys() != columns:
            raise ValueError(
                f"rows of one multi-row insert into {table.name} differ in their columns: "
                f"{sorted(columns ^ row.keys())}"
            )
    await conn.execute(insert(table), rows)
