"""Captures and cancels in bulk: many begins, or many finishes, in the writer's transaction.

The single path (persistence.follow_up, one operation at a time) runs four or five
statements per begin and per finish. When two or more begins (or finishes) of one kind
share a group-commit batch (persistence.group_commit), :func:`begin_many` and
:func:`finish_many` make the same decisions with one statement per step for the whole
batch:

- begin: one ``SELECT ... FOR UPDATE`` of the batch's payments, in id order; each command
  decided by its store's rule (``decide``: the single path's own) on the row as locked; one
  executemany ``UPDATE`` from ``authorized`` to the in-flight status with each start's
  claim; one ``SELECT`` of the moved rows back; one multi-row ``INSERT`` of the refusals'
  events and the webhook fan-out.
- finish: one ``SELECT ... FOR UPDATE`` of the payments held with the batch's claims (not
  one another worker holds), in id order; one executemany ``UPDATE`` from the in-flight
  status and only for each claim's holder; one ``SELECT`` of the rows back; one
  ``INSERT`` of the events and the fan-out. A finish that records the refunded total the
  provider reports (``FinishRequest.refunded_at_provider``) is one of them: its figure is
  bound per row into the single path's own expression
  (persistence.payment_rows.refunded_at_provider_to), which reads each row as it was.

The rules hold as on the single path. A payment named by more than one command of the
batch (a capture and its replay, a capture and a cancel, a finish and its duplicate) runs
all of them on the single path after the bulk statements, one after another in the batch's
order, each seeing what the one before it wrote: so a capture and a cancel of one payment
are decided in turn and exactly one moves it out of ``authorized``. A finish whose row is
not in flight under its claim (a stale claim, a follow-up settled since) runs the single
path too, which changes nothing and answers False. Every row the bulk ``UPDATE`` names must
move, and reads back as this transaction wrote it (the claim token each start set, or
released, and on PostgreSQL ``xmin`` this transaction's, since asyncpg counts no
executemany), else the batch raises, rolls back, and the group commit runs each operation
alone on the single path. The rows are locked in id order, every batch's order, so two
writers locking overlapping payments queue instead of deadlocking; the single path's later
``FOR UPDATE`` of a payment the bulk locked already does not wait.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, TypeVar

from sqlalchemy import BigInteger, bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.client_scope import in_scope, no_payment_in_scope
from domain.error_info import ErrorInfo
from domain.errors import PaygateError
from domain.payment_view import PaymentView
from domain.status import PaymentStatus
from persistence.claims import Claim, claim_columns
from persistence.follow_up import (
    FollowUpBegin,
    FollowUpCommand,
    FollowUpExisting,
    FollowUpRefused,
    FollowUpStarted,
    PaymentEventBuilder,
    RefusalEvent,
)
from persistence.outbox import OutboxMessage, outbox_row, webhooks_of
from persistence.payment_rows import (
    error_columns,
    insert_rows,
    payment_view_of,
    refunded_at_provider_to,
)
from persistence.tables import outbox, payments
from persistence.webhook_fanout import enqueue_webhooks
from telemetry.trace_context import current_traceparent


@dataclass(frozen=True, slots=True)
class Start:
    """The command moves the ``authorized`` payment to in flight, writing ``values`` too."""

    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Existing:
    """The command names the follow-up under way or done: a replay."""


@dataclass(frozen=True, slots=True)
class Refuse:
    error: PaygateError


Decision = Start | Existing | Refuse
# A store's rule, pure: what ``command`` does to ``payment`` (in scope, of its order, read
# under its lock). Raises PaygateError only where the single path would.
Decide = Callable[[Any, PaymentView], Decision]


@dataclass(frozen=True, slots=True)
class BeginRequest:
    command: FollowUpCommand
    refusal_event: RefusalEvent
    decide: Decide
    in_flight: PaymentStatus
    claim: Claim
    now: datetime
    # The single path, run for a command the bulk leaves alone (see the module docstring).
    alone: Callable[[AsyncConnection], Awaitable[FollowUpBegin]]
    # The caller's trace context, taken in its task: a batch runs in the group commit's.
    traceparent: str | None = field(default_factory=current_traceparent)


@dataclass(frozen=True, slots=True)
class FinishRequest:
    payment_request_id: str
    in_flight: PaymentStatus
    claim: str
    status: PaymentStatus
    error: ErrorInfo | None
    event: PaymentEventBuilder
    now: datetime
    # Columns set to plain values, bound per row (never SQL: see refunded_at_provider).
    values: dict[str, Any]
    alone: Callable[[AsyncConnection], Awaitable[bool]]
    # The refunded total the provider reports of a charge paygate had not recorded captured
    # (persistence.payment_rows.refunded_at_provider_to); 0: the total stays as it is.
    refunded_at_provider: int = 0
    traceparent: str | None = field(default_factory=current_traceparent)

    def changes(self) -> dict[str, Any]:
        """The plain values the finish writes, by column."""
        return {
            "status": self.status.value,
            "updated_at": self.now,
            **self.values,
            **error_columns(self.error),
            **claim_columns(None),
        }

    def shape(self) -> tuple[tuple[str, ...], bool]:
        """What the finish's UPDATE sets: its plain columns, and whether it raises the
        refunded total on the provider's word. One executemany per shape."""
        return tuple(sorted(self.changes())), self.refunded_at_provider > 0


_T = TypeVar("_T")

# Built once, for their memoized cache keys.
_LOCKED: Final = (
    select(payments)
    .where(payments.c.id.in_(bindparam("payment_ids", expanding=True)))
    .order_by(payments.c.id)
    .with_for_update()
)
# A finish locks only the payments held with one of the batch's claims: a finish under
# another's claim changes nothing, and locking that row would wait on its holder, who may
# hold it and be about to lock a payment this batch locked earlier (a begin of it): a
# deadlock. Such a finish runs alone, whose conditional UPDATE does not match the row as
# committed and so does not wait.
_HELD_LOCKED: Final = _LOCKED.where(payments.c.claim_token.in_(bindparam("claims", expanding=True)))
_READ_BACK: Final = select(payments).where(
    payments.c.id.in_(bindparam("payment_ids", expanding=True))
)
# Each row's own figure, in the one expression of the refunded total the single path sets too.
_REFUNDED_AT_PROVIDER: Final = bindparam("b_refunded_at_provider", type_=BigInteger)
# PostgreSQL: a row this transaction wrote (see persistence.refund_rows).
_WRITTEN_HERE: Final = text("payments.xmin = pg_current_xact_id()::xid")


async def begin_many(
    conn: AsyncConnection, requests: Sequence[BeginRequest]
) -> list[FollowUpBegin]:
    """Many begins of one kind in one transaction; see the module docstring."""
    per_payment = Counter(request.command.payment_request_id for request in requests)
    locked = await conn.execute(_LOCKED, {"payment_ids": sorted(per_payment)})
    rows = {row.id: payment_view_of(row._mapping) for row in locked}
    results: list[FollowUpBegin | None] = [None] * len(requests)
    alone: list[int] = []
    starts: dict[int, Start] = {}
    events: list[tuple[OutboxMessage, datetime]] = []
    for index, request in enumerate(requests):
        command = request.command
        if per_payment[command.payment_request_id] > 1:
            alone.append(index)
            continue
        payment = rows.get(command.payment_request_id)
        if payment is None or payment.order_id != command.order_id:
            results[index] = FollowUpRefused(no_payment_in_scope(), None)
            continue
        if not in_scope(payment.client_id, command.client_id):
            decision: Decision = Refuse(no_payment_in_scope())
        else:
            decision = request.decide(command, payment)
        if isinstance(decision, Start):
            if payment.status is not PaymentStatus.AUTHORIZED:
                raise RuntimeError("a follow-up starts only from authorized")
            starts[index] = decision
        elif isinstance(decision, Existing):
            results[index] = FollowUpExisting(payment)
        else:
            event = _traced(request.refusal_event(payment, decision.error), request.traceparent)
            events.append((event, request.now))
            results[index] = FollowUpRefused(decision.error, payment)
    if starts:
        started = await _start_all(conn, [(requests[i], starts[i]) for i in sorted(starts)])
        for index in starts:
            request = requests[index]
            results[index] = FollowUpStarted(
                started[request.command.payment_request_id], request.claim
            )
    await _enqueue(conn, events)
    for index in alone:
        results[index] = await requests[index].alone(conn)
    return [_begun(result) for result in results]


async def _start_all(
    conn: AsyncConnection, moves: Sequence[tuple[BeginRequest, Start]]
) -> dict[str, PaymentView]:
    """Move every payment of ``moves`` from ``authorized`` to its request's in-flight
    status under its claim, one executemany per shape (a capture writes its amount, a
    cancel nothing more); the rows as moved, by payment id. Raises unless every one moved.
    """
    shapes: dict[tuple[str, ...], list[tuple[BeginRequest, Start]]] = {}
    for move in moves:
        shapes.setdefault(tuple(sorted(move[1].values)), []).append(move)
    count = 0
    for names, members in shapes.items():
        statement = (
            update(payments)
            .where(payments.c.id == bindparam("b_id"))
            .where(payments.c.status == PaymentStatus.AUTHORIZED.value)
            .values(
                status=bindparam("b_status"),
                updated_at=bindparam("b_now"),
                claim_token=bindparam("b_claim_token"),
                claim_expires_at=bindparam("b_claim_expires_at"),
                **{name: bindparam(f"b_{name}") for name in names},
            )
        )
        params = [
            {
                "b_id": request.command.payment_request_id,
                "b_status": request.in_flight.value,
                "b_now": request.now,
                "b_claim_token": request.claim.token,
                "b_claim_expires_at": request.claim.expires_at,
                **{f"b_{name}": start.values[name] for name in names},
            }
            for request, start in members
        ]
        count = _counted(count, (await conn.execute(statement, params)).rowcount)
    expected = {request.command.payment_request_id: request.claim.token for request, _ in moves}
    views = await _read_back(conn, count, expected)
    for request, _ in moves:
        if views[request.command.payment_request_id].status is not request.in_flight:
            raise RuntimeError("a follow-up of the batch did not move to its in-flight status")
    return views


def _counted(total: int, rowcount: int) -> int:
    """Rows moved so far by a step's executemanys: -1 once one of them could not count."""
    return total + rowcount if total >= 0 and rowcount >= 0 else -1


async def finish_many(conn: AsyncConnection, requests: Sequence[FinishRequest]) -> list[bool]:
    """Many finishes of one kind in one transaction; see the module docstring."""
    per_payment = Counter(request.payment_request_id for request in requests)
    locked = await conn.execute(
        _HELD_LOCKED,
        {
            "payment_ids": sorted(per_payment),
            "claims": sorted({request.claim for request in requests}),
        },
    )
    held = {row.id: (row.status, row.claim_token) for row in locked}
    results: list[bool | None] = [None] * len(requests)
    alone: list[int] = []
    bulk: list[FinishRequest] = []
    for index, request in enumerate(requests):
        pid = request.payment_request_id
        if per_payment[pid] > 1 or held.get(pid) != (request.in_flight.value, request.claim):
            alone.append(index)
            continue
        bulk.append(request)
        results[index] = True
    if bulk:
        views = await _finish_all(conn, bulk)
        events = [
            (
                _traced(request.event(views[request.payment_request_id]), request.traceparent),
                request.now,
            )
            for request in bulk
        ]
        await _enqueue(conn, events)
    for index in alone:
        results[index] = await requests[index].alone(conn)
    return [_answered(result) for result in results]


async def _finish_all(
    conn: AsyncConnection, requests: Sequence[FinishRequest]
) -> dict[str, PaymentView]:
    """Record every outcome of ``requests``, one executemany per shape of changes (a
    capture made, and one not made, write different columns; a refunded total raised on
    the provider's word is computed from each row as it was, as on the single path); the
    rows as written."""
    shapes: dict[tuple[tuple[str, ...], bool], list[FinishRequest]] = {}
    for request in requests:
        shapes.setdefault(request.shape(), []).append(request)
    count = 0
    for (names, refunded_at_provider), members in shapes.items():
        statement = (
            update(payments)
            .where(payments.c.id == bindparam("b_id"))
            .where(payments.c.status == bindparam("b_in_flight"))
            .where(payments.c.claim_token == bindparam("b_claim"))
            .values(
                **{name: bindparam(f"b_{name}") for name in names},
                **(refunded_at_provider_to(_REFUNDED_AT_PROVIDER) if refunded_at_provider else {}),
            )
        )
        moved = await conn.execute(
            statement,
            [
                {
                    "b_id": request.payment_request_id,
                    "b_in_flight": request.in_flight.value,
                    "b_claim": request.claim,
                    **(
                        {"b_refunded_at_provider": request.refunded_at_provider}
                        if refunded_at_provider
                        else {}
                    ),
                    **{f"b_{name}": value for name, value in request.changes().items()},
                }
                for request in members
            ],
        )
        count = _counted(count, moved.rowcount)
    expected: dict[str, str | None] = {request.payment_request_id: None for request in requests}
    views = await _read_back(conn, count, expected)
    for request in requests:
        if views[request.payment_request_id].status is not request.status:
            raise RuntimeError(f"payment {request.payment_request_id} was not finished")
    return views


async def _read_back(
    conn: AsyncConnection, rowcount: int, claims: Mapping[str, str | None]
) -> dict[str, PaymentView]:
    """The rows an executemany just wrote, by id; raises unless each was written by it:
    the driver's count where it counts an executemany (SQLite), the rows' ``xmin`` on
    PostgreSQL, and on both each row's claim token as written (``claims``)."""
    ids = sorted(claims)
    if conn.dialect.supports_sane_multi_rowcount:
        if rowcount != len(ids):
            raise RuntimeError(f"a follow-up batch moved {rowcount} of {len(ids)} payments")
        query = _READ_BACK
    else:
        query = _READ_BACK.where(_WRITTEN_HERE)
    rows = await conn.execute(query, {"payment_ids": ids})
    views = {row.id: (payment_view_of(row._mapping), row.claim_token) for row in rows}
    if len(views) != len(ids) or any(views[i][1] != claims[i] for i in ids):
        raise RuntimeError("the follow-up batch's rows are not what it wrote")
    return {payment_id: view for payment_id, (view, _) in views.items()}


async def _enqueue(conn: AsyncConnection, events: list[tuple[OutboxMessage, datetime]]) -> None:
    if not events:
        return
    await insert_rows(conn, outbox, [outbox_row(event, now) for event, now in events])
    await enqueue_webhooks(conn, webhooks_of(events))


def _traced(event: OutboxMessage, traceparent: str | None) -> OutboxMessage:
    """The event under its caller's trace context (made in the group commit's task)."""
    return dataclasses.replace(event, traceparent=traceparent)


def _answered(result: _T | None) -> _T:
    assert result is not None, "every operation of a batch is answered"
    return result


def _begun(result: FollowUpBegin | None) -> FollowUpBegin:
    assert result is not None, "every begin of a batch is answered"
    return result
