"""The refund bulk path at its edges, on SQLite and PostgreSQL: partial captures and
currencies of 0 and 3 decimals, a payment already refunded, a statement failing in the
middle of a bulk run, totals moved under the batch by another writer, two writer queues
(two processes' engines) on one database, and a batch of 500.

What must hold in every case: a payment's refunds reserved plus settled never exceed what
it captured; its totals are what its refunds say; each refund's event reports the totals
its own refund left; a batch that fails leaves nothing and each operation reruns alone
with the answer it gives alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

import pytest
from sqlalchemy import event, insert, select, update

import persistence.refund_begin as refund_begin
import persistence.refund_finish as refund_finish
import persistence.refund_rows as refund_rows
from domain.errors import ErrorCode
from domain.money import Money
from domain.refunds import RefundStatus
from domain.status import PaymentStatus
from persistence.attempts import ATTEMPT_SUCCEEDED
from persistence.engine import create_engine
from persistence.outbox import OutboxMessage
from persistence.payment_begin import Started
from persistence.payment_store import PaymentStore
from persistence.refund_store import RefundRefused, RefundStarted, RefundStore
from persistence.tables import outbox, payments, refunds
from persistence.webhook_tables import webhook_deliveries, webhook_endpoints
from tests.integration.test_bulk_writes import _counting
from tests.integration.test_refund_store import (
    MESSAGES,
    NOW,
    _event,
    _refund_events,
    refund_of,
    succeeded_payment,
)
from tests.support.builders import create_payment, unexpected_refusal, unique

pytestmark = pytest.mark.integration


@pytest.fixture
def refund_store(engine, store):
    return RefundStore(engine, store.writes)


async def _totals(engine, payment_id: str) -> tuple[str, int, int]:
    async with engine.connect() as conn:
        row = (await conn.execute(select(payments).where(payments.c.id == payment_id))).one()
    return row.status, row.refunded_minor, row.refund_reserved_minor


async def _what_its_refunds_say(engine, payment_id: str) -> tuple[int, int]:
    """(succeeded, open) minor units, from the payment's refund rows."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(refunds.c.status, refunds.c.amount_minor).where(
                    refunds.c.payment_id == payment_id
                )
            )
        ).all()
    succeeded = sum(r.amount_minor for r in rows if r.status == RefundStatus.SUCCEEDED.value)
    still_open = sum(
        r.amount_minor
        for r in rows
        if r.status in (RefundStatus.PROCESSING.value, RefundStatus.PENDING.value)
    )
    return succeeded, still_open


async def _events_by_refund(engine) -> dict[str, list]:
    """Every refund event queued, by refund id, in the order queued."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(outbox.c.payload).order_by(outbox.c.id))).all()
    found: dict[str, list] = {}
    for row in rows:
        decoded = MESSAGES.decode_any_result(row.payload) if row.payload else None
        refund_id = getattr(decoded, "refund_id", None)
        if refund_id is not None:
            found.setdefault(refund_id, []).append(decoded)
    return found


async def _assert_consistent(engine, payment_id: str, captured: int) -> None:
    _status, refunded, reserved = await _totals(engine, payment_id)
    assert (refunded, reserved) == await _what_its_refunds_say(engine, payment_id)
    assert reserved >= 0
    assert refunded + reserved <= captured


async def _finish(store, begun: RefundStarted, status: RefundStatus, claim: str | None = None):
    return await store.finish(
        begun.refund.refund_id,
        claim=claim or begun.claim.token,
        status=status,
        provider_reference=f"re-{begun.refund.refund_id}",
        error=None,
        event=_event,
    )


def _shape(result) -> tuple[str, ErrorCode | None, int | None]:
    refund = result.refund
    amount = None if refund is None or refund.amount is None else refund.amount.minor_units
    code = result.error.code if isinstance(result, RefundRefused) else None
    return type(result).__name__, code, amount


async def _captured_only(engine, payment_id: str, captured_minor: int) -> None:
    """The capture took less than was authorised (as a partial capture records it)."""
    async with engine.begin() as conn:
        await conn.execute(
            update(payments)
            .where(payments.c.id == payment_id)
            .values(captured_minor=captured_minor)
        )


@pytest.mark.parametrize(
    ("currency", "amount", "captured"),
    [
        pytest.param("JPY", 10_000, 6_000, id="0 decimals"),
        pytest.param("KWD", 10_000, 6_001, id="3 decimals"),
        pytest.param("EUR", 10_000, 10_000, id="all captured"),
    ],
)
async def test_a_partial_capture_bounds_a_batch_and_a_refunded_payment_takes_no_more(
    engine, store, refund_store, currency, amount, captured
):
    """Guards: begin's remainder from ``captured_minor`` (refund_begin._decide), the bulk
    finish's ``refunded`` status from it (refund_finish._after with _TOTALS_LOCKED's
    ``captured_minor``), and the refusal of refunds of a refunded payment."""
    paid = Money(amount, currency)
    payment, twin, other = [await succeeded_payment(store, paid) for _ in range(3)]
    for p in (payment, twin):
        await _captured_only(engine, p.payment_request_id, captured)

    def commands(of):
        # All that remains, one unit more, then a part.
        return [refund_of(of, None), refund_of(of, Money(1, currency)), refund_of(of, None)]

    counts = _counting(engine)
    batch = [refund_of(other, Money(1, currency)), *commands(payment)]
    answers = await asyncio.gather(*(refund_store.begin(c, _event) for c in batch))
    assert counts["transactions"] == 1
    alone = [await refund_store.begin(c, _event) for c in commands(twin)]
    assert [_shape(a) for a in answers[1:]] == [_shape(a) for a in alone]
    assert _shape(answers[1]) == ("RefundStarted", None, captured)
    assert {_shape(a)[1] for a in answers[2:]} == {ErrorCode.REFUND_EXCEEDS_CAPTURED}
    assert await _totals(engine, payment.payment_request_id) == ("succeeded", 0, captured)
    await _assert_consistent(engine, payment.payment_request_id, captured)

    # Settled in one batch with another payment's refund: all of the capture refunded.
    started = [answers[0], answers[1]]
    counts = _counting(engine)
    done = await asyncio.gather(
        *(_finish(refund_store, s, RefundStatus.SUCCEEDED) for s in started)
    )
    assert list(done) == [True, True]
    assert counts["transactions"] == 1
    assert await _totals(engine, payment.payment_request_id) == ("refunded", captured, 0)
    (settled,) = await _refund_events(engine, answers[1].refund.refund_id)
    assert (settled.payment_status, settled.payment_refunded_minor) == (
        PaymentStatus.REFUNDED,
        captured,
    )

    # A refunded payment: a batch of its refunds is refused whole and reserves nothing.
    more = [refund_of(payment, Money(1, currency)), refund_of(payment, None)]
    answers = await asyncio.gather(
        *(refund_store.begin(c, _event) for c in [*more, refund_of(other, Money(1, currency))])
    )
    assert all(isinstance(a, RefundRefused) for a in answers[:2])
    assert isinstance(answers[2], RefundStarted)
    assert await _totals(engine, payment.payment_request_id) == ("refunded", captured, 0)
    await _assert_consistent(engine, payment.payment_request_id, captured)


def _failing_once(engine, starts_with: str) -> list[str]:
    """The first executemany whose SQL starts with ``starts_with`` raises: a statement of
    a bulk run fails (the single path never sends such an executemany)."""
    failed: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _fail(_conn, _cursor, statement, _parameters, _context, executemany) -> None:
        if executemany and not failed and statement.lstrip().upper().startswith(starts_with):
            failed.append(statement)
            raise RuntimeError("injected: a statement of the bulk run failed")

    return failed


async def test_a_bulk_begin_failing_midway_leaves_nothing_and_each_begin_reruns_alone(
    engine, store, refund_store
):
    """Guards: the group commit's rollback of a failed bulk run and its rerun one by one
    (persistence.group_commit._flush); without the rollback the reservation of the first
    attempt would stay, without the rerun every caller would get the error."""
    payment, other, twin = [await succeeded_payment(store) for _ in range(3)]

    def commands(of):
        return [refund_of(of, Money(6_000, "EUR")), refund_of(of, Money(6_000, "EUR"))]

    failed = _failing_once(engine, "INSERT INTO REFUNDS")
    batch = [*commands(payment), refund_of(other, Money(500, "EUR"))]
    answers = await asyncio.gather(*(refund_store.begin(c, _event) for c in batch))
    assert failed, "the bulk insert was sent, and failed"
    alone = [await refund_store.begin(c, _event) for c in commands(twin)]
    assert [_shape(a) for a in answers[:2]] == [_shape(a) for a in alone]
    assert isinstance(answers[2], RefundStarted)
    assert await _totals(engine, payment.payment_request_id) == ("succeeded", 0, 6_000)
    assert await _totals(engine, other.payment_request_id) == ("succeeded", 0, 500)
    for p in (payment, other):
        await _assert_consistent(engine, p.payment_request_id, 10_000)
    # The refusal's event once, from the rerun: nothing of the failed attempt is left.
    (refused,) = await _refund_events(engine, answers[1].refund.refund_id)
    assert refused.error.code is ErrorCode.REFUND_EXCEEDS_CAPTURED


async def test_a_bulk_finish_failing_midway_settles_each_refund_once(engine, store, refund_store):
    """Guards: as above, for finishes: a failure after the totals moved (the events' insert)
    rolls them back, and the reruns settle and release each reservation exactly once."""
    payment, other = await succeeded_payment(store), await succeeded_payment(store)
    begun = [
        await refund_store.begin(refund_of(payment, Money(a, "EUR")), _event)
        for a in (3_000, 4_000)
    ]
    on_other = await refund_store.begin(refund_of(other, Money(2_000, "EUR")), _event)
    assert all(isinstance(b, RefundStarted) for b in [*begun, on_other])

    failed = _failing_once(engine, "INSERT INTO OUTBOX")
    done = await asyncio.gather(
        _finish(refund_store, begun[0], RefundStatus.SUCCEEDED),
        _finish(refund_store, on_other, RefundStatus.FAILED),
        _finish(refund_store, begun[1], RefundStatus.SUCCEEDED),
    )
    assert failed, "the bulk insert of the events was sent, and failed"
    assert list(done) == [True, True, True]
    assert await _totals(engine, payment.payment_request_id) == ("partially_refunded", 7_000, 0)
    assert await _totals(engine, other.payment_request_id) == ("succeeded", 0, 0)
    for p in (payment, other):
        await _assert_consistent(engine, p.payment_request_id, 10_000)
    # One event per refund, each with the totals its own refund left (reruns run in the
    # batch's order).
    reported = []
    for started in [*begun, on_other]:
        (evt,) = await _refund_events(engine, started.refund.refund_id)
        reported.append((evt.status, evt.payment_refunded_minor))
    assert reported == [
        (RefundStatus.SUCCEEDED, 3_000),
        (RefundStatus.SUCCEEDED, 7_000),
        (RefundStatus.FAILED, 0),
    ]


async def _another_writer_reserves(conn, payment_id: str, minor: int) -> None:
    """What a writer that ignored the row lock would do between the batch's locked read
    and its write: move the payment's totals under it."""
    await conn.execute(
        update(payments)
        .where(payments.c.id == payment_id)
        .values(refund_reserved_minor=payments.c.refund_reserved_minor + minor)
    )


async def test_totals_moved_under_a_bulk_begin_fail_it_and_it_reruns_alone(
    engine, store, refund_store, monkeypatch
):
    """Guards: persistence.refund_rows.set_totals' check that every compare-and-set moved
    (the driver's count on SQLite, the read-back on PostgreSQL). Without it the batch's
    write is silently lost and its refunds stand without their reservation."""
    payment, other = await succeeded_payment(store), await succeeded_payment(store)
    original = refund_begin._reserve_many
    calls: list[int] = []

    async def moved_under(conn, paid, reserved):
        calls.append(1)
        await _another_writer_reserves(conn, payment.payment_request_id, 1_000)
        await original(conn, paid, reserved)

    monkeypatch.setattr(refund_begin, "_reserve_many", moved_under)
    batch = [refund_of(payment, Money(3_000, "EUR")), refund_of(other, Money(2_000, "EUR"))]
    answers = await asyncio.gather(*(refund_store.begin(c, _event) for c in batch))
    assert calls == [1], "the bulk run reserved once, and was rolled back"
    assert all(isinstance(a, RefundStarted) for a in answers)
    assert await _totals(engine, payment.payment_request_id) == ("succeeded", 0, 3_000)
    assert await _totals(engine, other.payment_request_id) == ("succeeded", 0, 2_000)
    for p in (payment, other):
        await _assert_consistent(engine, p.payment_request_id, 10_000)


async def test_totals_moved_under_a_bulk_finish_fail_it_and_it_reruns_alone(
    engine, store, refund_store, monkeypatch
):
    """Guards: as above, for the bulk finish's compare-and-set of the totals."""
    payment, other = await succeeded_payment(store), await succeeded_payment(store)
    mine = await refund_store.begin(refund_of(payment, Money(3_000, "EUR")), _event)
    theirs = await refund_store.begin(refund_of(other, Money(2_000, "EUR")), _event)
    assert isinstance(mine, RefundStarted)
    assert isinstance(theirs, RefundStarted)
    original = refund_rows.set_totals
    calls: list[int] = []

    async def moved_under(conn, seen, after):
        calls.append(1)
        await _another_writer_reserves(conn, payment.payment_request_id, 1_000)
        await original(conn, seen, after)

    monkeypatch.setattr(refund_finish, "set_totals", moved_under)
    done = await asyncio.gather(
        _finish(refund_store, mine, RefundStatus.SUCCEEDED),
        _finish(refund_store, theirs, RefundStatus.FAILED),
    )
    assert calls == [1], "the bulk run moved the totals once, and was rolled back"
    assert list(done) == [True, True]
    assert await _totals(engine, payment.payment_request_id) == ("partially_refunded", 3_000, 0)
    assert await _totals(engine, other.payment_request_id) == ("succeeded", 0, 0)
    for p in (payment, other):
        await _assert_consistent(engine, p.payment_request_id, 10_000)


async def test_two_processes_batching_refunds_of_one_payment_never_over_refund(
    engine, store, clock, database_url
):
    """Two writer queues on two engines (two consumer processes) run batches of refunds of
    one payment at once, begins then finishes: whatever the interleaving the database
    gives, no more than captured is reserved or settled, the totals are what the refunds
    say, and each settled refund's event reports a distinct running total (no lost
    update). Guards: the payments' row lock and the compare-and-set of the totals."""
    second = create_engine(database_url)
    try:
        queues = [
            RefundStore(engine, store.writes),
            RefundStore(second, PaymentStore(second, clock).writes),
        ]
        for _round in range(2):
            payment = await succeeded_payment(store)
            pid = payment.payment_request_id
            begins = [
                queue.begin(refund_of(payment, Money(2_500, "EUR")), _event)
                for queue in queues
                for _ in range(3)
            ]
            answers = await asyncio.gather(*begins)
            started = [(i // 3, a) for i, a in enumerate(answers) if isinstance(a, RefundStarted)]
            kinds = Counter(_shape(a) for a in answers)
            assert kinds == {
                ("RefundStarted", None, 2_500): 4,
                ("RefundRefused", ErrorCode.REFUND_EXCEEDS_CAPTURED, 2_500): 2,
            }
            assert await _totals(engine, pid) == ("succeeded", 0, 10_000)
            await _assert_consistent(engine, pid, 10_000)

            done = await asyncio.gather(
                *(_finish(queues[q], s, RefundStatus.SUCCEEDED) for q, s in started)
            )
            assert list(done) == [True] * 4
            assert await _totals(engine, pid) == ("refunded", 10_000, 0)
            await _assert_consistent(engine, pid, 10_000)
            reported = []
            for _q, s in started:
                (evt,) = await _refund_events(engine, s.refund.refund_id)
                reported.append(evt.payment_refunded_minor)
            assert sorted(reported) == [2_500, 5_000, 7_500, 10_000]
    finally:
        await second.dispose()


async def test_a_batch_of_500_begins_and_300_finishes(engine, store, refund_store):
    """The largest batch the writer queue makes: 50 payments, ten refunds each of which
    six fit; then their 300 settlements in one batch, each event with its running total."""
    paid = [await succeeded_payment(store) for _ in range(50)]
    counts = _counting(engine)
    commands = [refund_of(p, Money(1_500, "EUR")) for _ in range(10) for p in paid]
    answers = await asyncio.gather(*(refund_store.begin(c, _event) for c in commands))
    assert counts["transactions"] == 1
    per_payment: dict[str, list] = {p.payment_request_id: [] for p in paid}
    for c, a in zip(commands, answers, strict=True):
        per_payment[c.payment_request_id].append(a)
    for pid, its in per_payment.items():
        # In the batch's order: the first six fit, the last four do not.
        assert [_shape(a)[0] for a in its] == ["RefundStarted"] * 6 + ["RefundRefused"] * 4
        assert await _totals(engine, pid) == ("succeeded", 0, 9_000)

    started = [a for a in answers if isinstance(a, RefundStarted)]
    counts = _counting(engine)
    done = await asyncio.gather(
        *(_finish(refund_store, s, RefundStatus.SUCCEEDED) for s in started)
    )
    assert all(done)
    assert counts["transactions"] == 1
    events = await _events_by_refund(engine)
    for pid, its in per_payment.items():
        assert await _totals(engine, pid) == ("partially_refunded", 9_000, 0)
        # One event per refund: the refusals' at begin, the settlements' each with the
        # running total its own settlement left.
        assert [len(events[a.refund.refund_id]) for a in its] == [1] * 10
        reported = [events[a.refund.refund_id][0].payment_refunded_minor for a in its[:6]]
        assert reported == [1_500 * n for n in range(1, 7)]


async def _client_payment(store, client_id: str):
    """A succeeded payment of ``client_id``'s scope, as succeeded_payment makes one."""
    command = dataclasses.replace(create_payment(amount=Money(10_000, "EUR")), client_id=client_id)
    begun = await store.begin(
        command, provider="sandbox", account_key=b"k", refusal_event=unexpected_refusal
    )
    assert isinstance(begun, Started)
    await store.finish(
        command.payment_request_id,
        begun.attempt_key,
        claim=begun.claim.token,
        status=PaymentStatus.SUCCEEDED,
        attempt_status=ATTEMPT_SUCCEEDED,
        provider_reference="ch_test",
        error=None,
        event=OutboxMessage(unique("evt"), "payments.results", command.order_id, b""),
    )
    return command


async def test_a_refund_from_another_client_scope_sends_the_payments_owner_no_webhook(
    engine, store, refund_store
):
    """Another client's refund of a payment is refused as if the payment did not exist, and
    nothing of it may reach the owner: no refund stored, and no webhook queued to the
    owner's endpoints (the refusal's event still answers the sender on the results topic).
    Alone and in a batch."""
    payment = await _client_payment(store, "acme")
    async with engine.begin() as conn:
        await conn.execute(
            insert(webhook_endpoints).values(
                id=unique("we"),
                client_id="acme",
                url="https://hooks.example/in",
                enabled_events=["*"],
                secret_key_id="dk_x",
                secret_ciphertext=b"x",
                created_at=NOW,
            )
        )

    def from_mallory():
        return refund_of(payment, Money(1_000, "EUR"), client_id="mallory")

    commands = [from_mallory() for _ in range(3)]
    alone = await refund_store.begin(commands[0], _event)
    batch = await asyncio.gather(*(refund_store.begin(c, _event) for c in commands[1:]))
    for command, answer in zip(commands, [alone, *batch], strict=True):
        assert isinstance(answer, RefundRefused)
        assert answer.error.code is ErrorCode.NOT_FOUND
        assert answer.refund is None
        (refused,) = await _refund_events(engine, command.refund_id)
        assert refused.error.code is ErrorCode.NOT_FOUND
    assert await _totals(engine, payment.payment_request_id) == ("succeeded", 0, 0)
    async with engine.connect() as conn:
        queued = (await conn.execute(select(webhook_deliveries.c.event_type))).all()
    assert queued == []


@pytest.mark.parametrize("finish_first", [True, False], ids=["finish first", "begins first"])
async def test_begins_and_a_release_of_one_payment_in_one_batch_answer_in_the_batchs_order(
    engine, store, refund_store, finish_first
):
    """A failed finish releasing 6,000 and two begins of 3,000 and 6,000 of the same
    payment, with a replay of the released refund, in one batch: each kind runs in bulk at
    its first member's place, so the begins see the release only if it came first, as one
    at a time in that order; the replay reports the refund as it is where it runs, and
    nothing exceeds the capture either way. Guards: group_commit._run_together's running a
    kind where its first member stands (run in another order, the 6,000 would fit where
    the batch's order refuses it, or the other way round)."""
    payment, other = await succeeded_payment(store), await succeeded_payment(store)
    held_command = refund_of(payment, Money(6_000, "EUR"))
    held = await refund_store.begin(held_command, _event)
    on_other = await refund_store.begin(refund_of(other, Money(1_000, "EUR")), _event)
    assert isinstance(held, RefundStarted)
    assert isinstance(on_other, RefundStarted)

    begins = [
        refund_store.begin(refund_of(payment, Money(3_000, "EUR")), _event),
        refund_store.begin(refund_of(payment, Money(6_000, "EUR")), _event),
        refund_store.begin(held_command, _event),
    ]
    finishes = [
        refund_store.finish(
            held.refund.refund_id,
            claim=held.claim.token,
            status=RefundStatus.FAILED,
            provider_reference=None,
            error=None,
            event=_event,
        ),
        _finish(refund_store, on_other, RefundStatus.SUCCEEDED),
    ]
    counts = _counting(engine)
    ordered = [*finishes, *begins] if finish_first else [*begins, *finishes]
    answers = await asyncio.gather(*ordered)
    assert counts["transactions"] == 1
    done = answers[:2] if finish_first else answers[3:]
    three, six, replay = answers[2:] if finish_first else answers[:3]
    assert list(done) == [True, True]
    assert isinstance(three, RefundStarted)
    assert replay.same_parameters
    if finish_first:
        # All 10,000 free after the release: both fit.
        assert isinstance(six, RefundStarted)
        assert replay.refund.status is RefundStatus.FAILED
        expected_reserved = 9_000
    else:
        # 4,000 free before it: 3,000 fits, 6,000 does not; then 6,000 is released.
        assert isinstance(six, RefundRefused)
        assert six.error.code is ErrorCode.REFUND_EXCEEDS_CAPTURED
        assert replay.refund.status is RefundStatus.PROCESSING
        expected_reserved = 3_000
    assert await _totals(engine, payment.payment_request_id) == (
        "succeeded",
        0,
        expected_reserved,
    )
    await _assert_consistent(engine, payment.payment_request_id, 10_000)
    await _assert_consistent(engine, other.payment_request_id, 10_000)
