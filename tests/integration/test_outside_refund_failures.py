"""A refund made outside paygate that the provider fails later is taken back, once.

Store level, on SQLite and PostgreSQL (the ``engine`` fixture), interleavings fixed by hand:
the failure before or after the ``charge.refunded`` reading that counts the refund, the
failure delivered twice, a refund of paygate's in flight while it lands, and bad notices.
For every payment ``refunded_minor = succeeded refund rows + refunded_outside_minor``
holds, and the outside part never takes paygate's own refunds.

Before revision 0030 such a failure was acknowledged and ignored: ``refunded_outside_minor``
stayed raised, and paygate refused to refund the part the payer was still owed.
"""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.money import Money
from domain.refunds import RefundStatus
from domain.status import PaymentStatus
from persistence.attempts import ATTEMPT_DECLINED, ATTEMPT_SUCCEEDED
from persistence.outbox import OutboxMessage
from persistence.outside_refund_failed import OutsideFailure
from persistence.payment_begin import Started
from persistence.payment_store import PaymentStore
from persistence.provider_refund_store import ProviderRefundStore
from persistence.refund_store import RefundStarted, RefundStore
from persistence.tables import outbox, outside_refund_failures, payments, refunds
from tests.integration.test_refund_store import _event, refund_of
from tests.support.attempt_migrations import migrate
from tests.support.builders import create_payment, unexpected_refusal, unique

pytestmark = pytest.mark.integration

CAPTURED = 10_000  # EUR cents


def _payment_event(view) -> OutboxMessage:
    return OutboxMessage(unique("evt"), "payments.results", view.order_id, b"")


@dataclasses.dataclass
class Paid:
    payment_id: str
    order_id: str
    charge: str  # the provider's reference of the charge (Stripe's PaymentIntent)

    @property
    def payment_request_id(self) -> str:  # as refund_of reads a payment
        return self.payment_id


async def _paid(store: PaymentStore, provider: str = "stripe") -> Paid:
    command = create_payment(amount=Money(CAPTURED, "EUR"))
    begun = await store.begin(
        command, provider=provider, account_key=b"k", refusal_event=unexpected_refusal
    )
    assert isinstance(begun, Started)
    charge = unique("pi")
    assert await store.finish(
        command.payment_request_id,
        begun.attempt_key,
        claim=begun.claim.token,
        status=PaymentStatus.SUCCEEDED,
        attempt_status=ATTEMPT_SUCCEEDED,
        provider_reference=charge,
        error=None,
        event=OutboxMessage(unique("evt"), "payments.results", command.order_id, b""),
    )
    return Paid(command.payment_request_id, command.order_id, charge)


async def _state(engine: AsyncEngine, payment_id: str) -> tuple[str, int, int, int]:
    """(status, refunded, refunded outside, reserved), after checking the equality."""
    async with engine.connect() as conn:
        by_rows = (
            await conn.execute(
                select(func.coalesce(func.sum(refunds.c.amount_minor), 0))
                .where(refunds.c.payment_id == payment_id)
                .where(refunds.c.status == RefundStatus.SUCCEEDED.value)
            )
        ).scalar_one()
        row = (await conn.execute(select(payments).where(payments.c.id == payment_id))).one()
    assert row.refunded_minor == by_rows + row.refunded_outside_minor
    assert row.refunded_outside_minor >= 0
    assert row.refunded_minor + row.refund_reserved_minor <= CAPTURED
    return row.status, row.refunded_minor, row.refunded_outside_minor, row.refund_reserved_minor


async def _outbox_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(outbox))).scalar_one())


async def _absorb(stores: ProviderRefundStore, paid: Paid, provider_refunded: int) -> None:
    """Stripe's ``charge.refunded`` with ``amount_refunded`` = ``provider_refunded``."""
    await stores.absorb(
        paid.payment_id,
        provider_reference=paid.charge,
        provider_refunded_minor=provider_refunded,
        event=lambda view, _failed: _payment_event(view),
    )


async def _failed(
    stores: ProviderRefundStore,
    paid: Paid,
    refund: str,
    minor: int,
    *,
    currency: str = "EUR",
    charge: str | None = None,
) -> OutsideFailure:
    """Stripe's ``refund.failed`` of the Dashboard refund ``refund`` of ``minor``."""
    result, _ = await stores.outside_refund_failed(
        provider="stripe",
        provider_reference=refund,
        charge_reference=paid.charge if charge is None else charge,
        amount=Money(minor, currency),
        event=_payment_event,
    )
    return result


async def _begin_own(refund_store: RefundStore, paid: Paid, minor: int) -> RefundStarted:
    begun = await refund_store.begin(
        refund_of(paid, Money(minor, "EUR")),
        _event,
    )
    assert isinstance(begun, RefundStarted)
    return begun


async def _finish_own(refund_store: RefundStore, begun: RefundStarted, reference: str) -> None:
    assert await refund_store.finish(
        begun.refund.refund_id,
        claim=begun.claim.token,
        status=RefundStatus.SUCCEEDED,
        provider_reference=reference,
        error=None,
        event=_event,
    )


async def test_a_counted_outside_refund_that_fails_is_taken_back_once_and_never_again(
    engine: AsyncEngine, store: PaymentStore, clock
):
    stores = ProviderRefundStore(store.writes, clock)
    paid = await _paid(store)
    await _absorb(stores, paid, 3_000)  # charge.refunded: 30.00 refunded in the Dashboard
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 3_000, 3_000, 0)
    events = await _outbox_count(engine)

    assert await _failed(stores, paid, "re_dash1", 3_000) is OutsideFailure.TAKEN_BACK
    assert await _state(engine, paid.payment_id) == ("succeeded", 0, 0, 0)
    assert await _outbox_count(engine) == events + 1  # the payment's event says so

    # Delivered again: nothing changes, no second event.
    assert await _failed(stores, paid, "re_dash1", 3_000) is OutsideFailure.ALREADY
    # charge.refunded made before the failure, delivered late: still counts the 30.00.
    await _absorb(stores, paid, 3_000)
    assert await _state(engine, paid.payment_id) == ("succeeded", 0, 0, 0)
    assert await _outbox_count(engine) == events + 1


async def test_a_failure_arriving_before_the_reading_that_counts_it_keeps_it_uncounted(
    engine: AsyncEngine, store: PaymentStore, clock
):
    """Stripe delivers ``refund.failed`` first and the ``charge.refunded`` made when the
    refund was made (counting it) after: the refund is never counted, and one refunded
    outside beside it still is."""
    stores = ProviderRefundStore(store.writes, clock)
    paid = await _paid(store)
    assert await _failed(stores, paid, "re_dash1", 2_000) is OutsideFailure.NOTED
    assert await _state(engine, paid.payment_id) == ("succeeded", 0, 0, 0)

    await _absorb(stores, paid, 2_000)  # made before the failure: the failed refund alone
    assert await _state(engine, paid.payment_id) == ("succeeded", 0, 0, 0)
    await _absorb(stores, paid, 2_500)  # another Dashboard refund of 5.00 besides it
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 500, 500, 0)
    assert await _failed(stores, paid, "re_dash1", 2_000) is OutsideFailure.ALREADY
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 500, 500, 0)


async def test_two_outside_refunds_one_failing_takes_back_exactly_its_amount(
    engine: AsyncEngine, store: PaymentStore, clock
):
    stores = ProviderRefundStore(store.writes, clock)
    paid = await _paid(store)
    await _absorb(stores, paid, 1_000)
    await _absorb(stores, paid, 4_000)  # 10.00 then 30.00 refunded in the Dashboard
    assert await _failed(stores, paid, "re_dash2", 3_000) is OutsideFailure.TAKEN_BACK
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 1_000, 1_000, 0)
    for late in (4_000, 1_000):  # before the failure, and after it (Stripe's lowered total)
        await _absorb(stores, paid, late)
        assert await _state(engine, paid.payment_id) == ("partially_refunded", 1_000, 1_000, 0)


async def test_paygates_refund_in_flight_is_untouched_when_an_outside_refund_fails(
    engine: AsyncEngine, store: PaymentStore, clock
):
    """paygate reserves 20.00 for its own refund (sent, not answered) while a Dashboard
    refund of 30.00, counted, fails: only the outside part falls; the reservation stays,
    and the refund's success then lands as its own row."""
    stores = ProviderRefundStore(store.writes, clock)
    refund_store = RefundStore(engine, store.writes, clock)
    paid = await _paid(store)
    await _absorb(stores, paid, 3_000)
    own = await _begin_own(refund_store, paid, 2_000)
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 3_000, 3_000, 2_000)

    assert await _failed(stores, paid, "re_dash1", 3_000) is OutsideFailure.TAKEN_BACK
    assert await _state(engine, paid.payment_id) == ("succeeded", 0, 0, 2_000)
    # Stripe's reading while both stood (the own refund made): 50.00, neither counted again.
    await _absorb(stores, paid, 5_000)
    assert await _state(engine, paid.payment_id) == ("succeeded", 0, 0, 2_000)

    await _finish_own(refund_store, own, "re_own1")
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 2_000, 0, 0)
    await _absorb(stores, paid, 5_000)  # the same late reading, once paygate's is recorded
    await _absorb(stores, paid, 2_000)  # and Stripe's after the failure
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 2_000, 0, 0)


async def test_an_outside_failure_never_reaches_into_paygates_refunds(
    engine: AsyncEngine, store: PaymentStore, clock
):
    """Only 10.00 of a 30.00 Dashboard refund was counted (paygate's 20.00 in flight when
    Stripe's reading came): the failure takes back those 10.00, not paygate's refund."""
    stores = ProviderRefundStore(store.writes, clock)
    refund_store = RefundStore(engine, store.writes, clock)
    paid = await _paid(store)
    own = await _begin_own(refund_store, paid, 2_000)
    await _absorb(stores, paid, 3_000)  # the Dashboard's 30.00; 20.00 may be paygate's
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 1_000, 1_000, 2_000)
    await _finish_own(refund_store, own, "re_own1")
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 3_000, 1_000, 0)

    assert await _failed(stores, paid, "re_dash1", 3_000) is OutsideFailure.TAKEN_BACK
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 2_000, 0, 0)
    await _absorb(stores, paid, 5_000)  # made while both stood
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 2_000, 0, 0)


async def test_bad_failure_notices_change_nothing(engine: AsyncEngine, store: PaymentStore, clock):
    stores = ProviderRefundStore(store.writes, clock)
    refund_store = RefundStore(engine, store.writes, clock)
    paid = await _paid(store)
    other = await _paid(store)
    await _absorb(stores, paid, 3_000)
    await _absorb(stores, other, 3_000)
    own = await _begin_own(refund_store, paid, 1_000)
    await _finish_own(refund_store, own, "re_own1")
    others_own = await _begin_own(refund_store, other, 1_000)
    await _finish_own(refund_store, others_own, "re_own2")
    before = await _state(engine, paid.payment_id)
    events = await _outbox_count(engine)

    # Another currency; more than was captured; paygate's own refund's id, of this payment
    # (acknowledged: its failure comes with its metadata) or of another; no such charge.
    assert await _failed(stores, paid, "re_x", 3_000, currency="USD") is OutsideFailure.MISMATCH
    assert await _failed(stores, paid, "re_x", CAPTURED + 1) is OutsideFailure.MISMATCH
    assert await _failed(stores, paid, "re_own1", 1_000) is OutsideFailure.OWN
    assert await _failed(stores, paid, "re_own2", 1_000) is OutsideFailure.MISMATCH
    assert await _failed(stores, paid, "re_x", 1_000, charge="pi_nobody") is OutsideFailure.UNKNOWN
    assert await _state(engine, paid.payment_id) == before
    assert await _outbox_count(engine) == events

    # A refund id recorded for one payment, named again for another, or for another amount.
    assert await _failed(stores, other, "re_dash1", 3_000) is OutsideFailure.TAKEN_BACK
    assert await _failed(stores, paid, "re_dash1", 3_000) is OutsideFailure.MISMATCH
    assert await _failed(stores, other, "re_dash1", 2_999) is OutsideFailure.MISMATCH
    assert await _state(engine, paid.payment_id) == before
    assert await _state(engine, other.payment_id) == ("partially_refunded", 1_000, 0, 0)
    async with engine.connect() as conn:
        recorded = (await conn.execute(select(outside_refund_failures))).all()
    assert [(r.payment_id, r.amount_minor, r.taken_back_minor) for r in recorded] == [
        (other.payment_id, 3_000, 3_000)
    ]


async def _ended(store: PaymentStore, status: PaymentStatus, attempt_status: str) -> Paid:
    command = create_payment(amount=Money(CAPTURED, "EUR"))
    begun = await store.begin(
        command, provider="stripe", account_key=b"k", refusal_event=unexpected_refusal
    )
    assert isinstance(begun, Started)
    charge = unique("pi")
    assert await store.finish(
        command.payment_request_id,
        begun.attempt_key,
        claim=begun.claim.token,
        status=status,
        attempt_status=attempt_status,
        provider_reference=charge,
        error=None,
        event=OutboxMessage(unique("evt"), "payments.results", command.order_id, b""),
    )
    return Paid(command.payment_request_id, command.order_id, charge)


async def test_a_payment_not_captured_yet_is_asked_again_and_one_never_captured_ignores_it(
    engine: AsyncEngine, store: PaymentStore, clock
):
    stores = ProviderRefundStore(store.writes, clock)
    held = await _ended(store, PaymentStatus.AUTHORIZED, ATTEMPT_SUCCEEDED)
    declined = await _ended(store, PaymentStatus.FAILED, ATTEMPT_DECLINED)
    assert await _failed(stores, held, "re_dash1", 1_000) is OutsideFailure.NOT_CAPTURED
    assert await _failed(stores, declined, "re_dash2", 1_000) is OutsideFailure.UNKNOWN
    async with engine.connect() as conn:
        assert (await conn.execute(select(outside_refund_failures))).all() == []


async def test_0030_down_and_up_keeps_the_payments(engine: AsyncEngine, store: PaymentStore, clock):
    stores = ProviderRefundStore(store.writes, clock)
    paid = await _paid(store)
    await _absorb(stores, paid, 3_000)
    assert await _failed(stores, paid, "re_dash1", 1_000) is OutsideFailure.TAKEN_BACK

    await migrate(engine, "downgrade", "0029")
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert "outside_refund_failures" not in tables
    await migrate(engine, "upgrade", "head")
    assert await _state(engine, paid.payment_id) == ("partially_refunded", 2_000, 2_000, 0)
    assert await _failed(stores, paid, "re_dash2", 2_000) is OutsideFailure.TAKEN_BACK
    assert await _state(engine, paid.payment_id) == ("succeeded", 0, 0, 0)


async def test_0030_finds_the_indexes_an_operator_built_ahead(engine: AsyncEngine):
    # docs/migrations.md: on a large PostgreSQL database the two indexes are built by hand,
    # CONCURRENTLY (outside a transaction), before the upgrade; 0030 must then build nothing.
    await migrate(engine, "downgrade", "0029")
    ahead = (
        "CREATE INDEX {how} IF NOT EXISTS ix_{table}_provider_reference"
        " ON {table} (provider_reference)"
    )
    how = "CONCURRENTLY" if engine.dialect.name == "postgresql" else ""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in ("payments", "refunds"):
            await conn.execute(text(ahead.format(how=how, table=table)))

    await migrate(engine, "upgrade", "head")

    async with engine.connect() as conn:
        indexes = await conn.run_sync(
            lambda sync: {
                table: {i["name"] for i in inspect(sync).get_indexes(table)}
                for table in ("payments", "refunds")
            }
        )
    assert "ix_payments_provider_reference" in indexes["payments"]
    assert "ix_refunds_provider_reference" in indexes["refunds"]
