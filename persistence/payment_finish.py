"""Finishing an attempt: the provider's answer and its result event, in one transaction,
for one operation or a batch of them.

Only the claim's holder finishes (see persistence.claims); a worker that lost the claim
changes the payment in no way, but a charge it reports under an attempt closed meanwhile is
recorded on that attempt (a stray charge, for consumer.stray_charges), never dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, bindparam, case, func, null, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.error_info import ErrorInfo
from domain.next_action import NextAction
from domain.status import ALLOWED_TRANSITIONS, InvalidTransitionError, PaymentStatus
from persistence.attempts import (
    ATTEMPT_REQUIRES_ACTION,
    ATTEMPT_SUCCEEDED,
    OPEN_ATTEMPT_STATUSES,
)
from persistence.claims import claim_columns, release_claim
from persistence.outbox import OutboxMessage, enqueue_outbox, outbox_row, webhooks_of
from persistence.payment_rows import (
    captured_minor_of,
    error_columns,
    insert_rows,
    next_action_columns,
    refunded_at_provider_to,
)
from persistence.tables import outbox, payments, provider_attempts
from persistence.webhook_fanout import enqueue_webhooks

# For each status, the statuses a payment may move to it from.
_MAY_BECOME = {
    target: [source for source, targets in ALLOWED_TRANSITIONS.items() if target in targets]
    for target in PaymentStatus
}


@dataclass(frozen=True, slots=True)
class FinishRequest:
    payment_id: str
    attempt_key: str
    claim: str
    status: PaymentStatus
    attempt_status: str
    provider_reference: str | None
    error: ErrorInfo | None
    event: OutboxMessage
    now: datetime
    # Set with status requires_action; any other finish clears the payment's next action.
    next_action: NextAction | None = None


def _already_there(current: PaymentStatus, target: PaymentStatus) -> bool:
    """Whether a payment in ``current`` that may not become ``target`` already is it."""
    # Already there, or "outcome unknown" arriving after the outcome became known (a
    # timed-out call whose answer the reconciler already recorded). A charge that succeeded
    # and was refunded since counts as "already there".
    # A payment waiting on its payer learns nothing from "outcome unknown" either.
    return current.charge_outcome is target.charge_outcome or (
        target is PaymentStatus.PENDING
        and (current.charge_known or current is PaymentStatus.REQUIRES_ACTION)
    )


def _attempt_finished_at(request: FinishRequest) -> datetime | None:
    # An attempt whose outcome is unknown stays open: it is in doubt until the provider is
    # asked about it. So does one waiting for the payer, until the provider says how it ended.
    return None if request.attempt_status in OPEN_ATTEMPT_STATUSES else request.now


async def finish_one(conn: AsyncConnection, request: FinishRequest) -> bool:
    status = request.status
    # A conditional update: it moves the payment only from a status that may become
    # ``status`` and only for the claim's holder, and takes the row lock on PostgreSQL as it
    # does so.
    moved = await conn.execute(
        update(payments)
        .where(payments.c.id == request.payment_id)
        .where(payments.c.status.in_([s.value for s in _MAY_BECOME[status]]))
        .where(payments.c.claim_token == request.claim)
        .values(
            status=status.value,
            provider_reference=request.provider_reference,
            updated_at=request.now,
            next_retry_at=None,
            # A charge that ends refunded was refunded in full at the provider, outside
            # paygate (domain.status): all of it counts as refunded there.
            **(
                refunded_at_provider_to(captured_minor_of(payments))
                if status is PaymentStatus.REFUNDED
                else {}
            ),
            **error_columns(request.error),
            **claim_columns(None),
            **next_action_columns(request.next_action),
        )
    )
    if moved.rowcount != 1:
        current = (
            await conn.execute(
                select(payments.c.status, payments.c.claim_token).where(
                    payments.c.id == request.payment_id
                )
            )
        ).one()
        if current.claim_token != request.claim or _already_there(
            PaymentStatus(current.status), status
        ):
            await _note_stray_charge(conn, request)
            # Nothing to record; the caller's work is over all the same (a second timeout of
            # a pending payment, say), so its claim, if it still holds it, goes.
            await release_claim(conn, payments, request.payment_id, request.claim)
            return False
        raise InvalidTransitionError(PaymentStatus(current.status), status)
    finished = await conn.execute(_FINISH_ATTEMPT, [_finish_attempt_params(request)])
    if finished.rowcount != 1:
        # The claim's holder finishes the attempt it opened, which only it can close: if it
        # is not open, the store was changed behind the claims' back. Roll back.
        raise RuntimeError(f"attempt {request.attempt_key} is not open")
    await enqueue_outbox(conn, request.event, request.now)
    return True


async def _note_stray_charge(conn: AsyncConnection, request: FinishRequest) -> None:
    """A worker that lost its claim learned that the provider charged under its attempt.

    The charge is recorded on the attempt, never dropped. If the attempt was closed
    meanwhile (as certainly not charged, or the payment moved on), it now says succeeded, and
    the stray-charge sweep finds and reverses the charge. If it is still open, its reference
    is kept: the owner may already hold a 503 for its own call and close it as failed, and
    :data:`_FINISH_ATTEMPT` then keeps it succeeded, for the sweep all the same.
    """
    if request.attempt_status != ATTEMPT_SUCCEEDED:
        return
    await conn.execute(
        _NOTE_STRAY_CHARGE,
        [{"b_attempt_key": request.attempt_key, "b_ref": request.provider_reference}],
    )


# A charge reported by a worker that lost its claim: a closed attempt says succeeded; an
# open one keeps its status (its owner finishes it) and the reference.
_NOTE_STRAY_CHARGE = (
    update(provider_attempts)
    .where(provider_attempts.c.attempt_key == bindparam("b_attempt_key"))
    .where(provider_attempts.c.status != ATTEMPT_SUCCEEDED)
    .where(provider_attempts.c.provider_reference.is_(None))
    .values(
        status=case(
            (provider_attempts.c.finished_at.is_(None), provider_attempts.c.status),
            else_=ATTEMPT_SUCCEEDED,
        ),
        provider_reference=bindparam("b_ref"),
    )
)


async def finish_many(conn: AsyncConnection, requests: Sequence[FinishRequest]) -> list[bool]:
    """Many finishes in one transaction, with :func:`finish_one`'s semantics.

    The payments are read, and locked (``FOR UPDATE`` on PostgreSQL, in id order; SQLite
    holds the write lock), in one query; which may move is decided here from the status
    read; the moves are one executemany UPDATE that re-checks that status per row. A
    refused transition raises, so that the batch is run again one operation at a time and
    only its caller hears of it. Two finishes of one payment, or one of a payment not
    found, run :func:`finish_one` after the bulk statements.
    """
    per_payment = Counter(request.payment_id for request in requests)
    rows = (
        await conn.execute(
            select(payments.c.id, payments.c.status, payments.c.claim_token)
            .where(payments.c.id.in_(sorted(per_payment)))
            .order_by(payments.c.id)
            .with_for_update()
        )
    ).all()
    seen = {row.id: PaymentStatus(row.status) for row in rows}
    claims = {row.id: row.claim_token for row in rows}
    results: list[bool] = [False] * len(requests)
    alone: list[int] = []
    moves: list[FinishRequest] = []
    strays: list[FinishRequest] = []
    releases: list[FinishRequest] = []
    for index, request in enumerate(requests):
        current = seen.get(request.payment_id)
        owner = claims.get(request.payment_id) == request.claim
        if current is None or per_payment[request.payment_id] > 1:
            alone.append(index)  # unusual: decided one at a time
        elif owner and current in _MAY_BECOME[request.status]:
            moves.append(request)
            results[index] = True
        elif owner and not _already_there(current, request.status):
            raise InvalidTransitionError(current, request.status)
        else:
            # Not applied. A charge is never dropped (see _note_stray_charge); an owner's
            # claim goes all the same.
            if request.attempt_status == ATTEMPT_SUCCEEDED:
                strays.append(request)
            if owner:
                releases.append(request)
    if moves:
        moved = await conn.execute(
            _MOVE_PAYMENT,
            [
                {
                    "b_id": request.payment_id,
                    "b_seen": seen[request.payment_id].value,
                    "b_claim": request.claim,
                    "b_status": request.status.value,
                    "b_provider_reference": request.provider_reference,
                    "b_now": request.now,
                    **{f"b_{name}": value for name, value in error_columns(request.error).items()},
                    **{
                        f"b_{name}": value
                        for name, value in next_action_columns(request.next_action).items()
                    },
                }
                for request in moves
            ],
        )
        # The rows are locked since they were read, so every one moves; checked where the
        # driver can count an executemany (SQLite), as a guard on that reasoning.
        if conn.dialect.supports_sane_multi_rowcount and moved.rowcount != len(moves):
            raise RuntimeError(f"bulk finish moved {moved.rowcount} of {len(moves)} payments")
        finished = await conn.execute(
            _FINISH_ATTEMPT, [_finish_attempt_params(request) for request in moves]
        )
        if conn.dialect.supports_sane_multi_rowcount and finished.rowcount != len(moves):
            raise RuntimeError(f"bulk finish closed {finished.rowcount} of {len(moves)} attempts")
        await insert_rows(conn, outbox, [outbox_row(r.event, r.now) for r in moves])
        await enqueue_webhooks(conn, webhooks_of((r.event, r.now) for r in moves))
    if strays:
        await conn.execute(
            _NOTE_STRAY_CHARGE,
            [{"b_attempt_key": r.attempt_key, "b_ref": r.provider_reference} for r in strays],
        )
    for request in releases:
        await release_claim(conn, payments, request.payment_id, request.claim)
    for index in alone:
        results[index] = await finish_one(conn, requests[index])
    return results


# A charge that ends ``refunded`` (paid, then refunded in full at the provider outside
# paygate: domain.status) has returned all it took; any other finish leaves the refunded
# total as it is.
_REFUNDED_MINOR = case(
    (bindparam("b_status") == PaymentStatus.REFUNDED.value, captured_minor_of(payments)),
    else_=payments.c.refunded_minor,
)

# Bind names differ from column names: SQLAlchemy reserves those for the SET clause.
_MOVE_PAYMENT = (
    update(payments)
    .where(payments.c.id == bindparam("b_id"))
    .where(payments.c.status == bindparam("b_seen"))
    .where(payments.c.claim_token == bindparam("b_claim"))
    .values(
        status=bindparam("b_status"),
        provider_reference=bindparam("b_provider_reference"),
        updated_at=bindparam("b_now"),
        **refunded_at_provider_to(_REFUNDED_MINOR),
        next_retry_at=None,
        claim_token=None,
        claim_expires_at=None,
        **{name: bindparam(f"b_{name}") for name in error_columns(None)},
        **{name: bindparam(f"b_{name}") for name in next_action_columns(None)},
    )
)

# Only an open attempt finishes; the sealed request goes once the attempt is closed (one
# whose outcome is unknown stays open, and keeps it for whoever re-sends it). A charge a
# former owner reported on it meanwhile (its reference is set) stays recorded as succeeded,
# whatever the owner's own call met.
_FINISH_ATTEMPT = (
    update(provider_attempts)
    .where(provider_attempts.c.attempt_key == bindparam("b_attempt_key"))
    .where(provider_attempts.c.finished_at.is_(None))
    .values(
        status=case(
            (provider_attempts.c.provider_reference.is_not(None), ATTEMPT_SUCCEEDED),
            else_=bindparam("b_status"),
        ),
        finished_at=bindparam("b_finished_at"),
        provider_reference=func.coalesce(
            bindparam("b_provider_reference"), provider_attempts.c.provider_reference
        ),
        sealed_request=case(
            (bindparam("b_keep_sealed", type_=Boolean), provider_attempts.c.sealed_request),
            else_=null(),
        ),
    )
)


def _finish_attempt_params(request: FinishRequest) -> dict[str, Any]:
    finished_at = _attempt_finished_at(request)
    # An attempt's reference marks a charge (see _NOTE_STRAY_CHARGE): one waiting for its
    # payer has charged nothing yet, so its reference stays on the payment only.
    waiting = request.attempt_status == ATTEMPT_REQUIRES_ACTION
    return {
        "b_attempt_key": request.attempt_key,
        "b_status": request.attempt_status,
        "b_finished_at": finished_at,
        "b_provider_reference": None if waiting else request.provider_reference,
        "b_keep_sealed": finished_at is None,
    }
