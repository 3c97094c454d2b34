"""What the provider reports refunded outside paygate is kept apart from paygate's refunds.

A payment's refunded total counts paygate's succeeded refunds (rows) and refunds made at the
provider by hand (no row, domain.provider_refunds); ``refunded_outside_minor`` holds the
second part, so ``refunded_minor = succeeded rows + refunded_outside_minor`` for every
payment, whichever write moved the total. On SQLite and PostgreSQL, and through revision
0027 down and up (existing payments get what their total holds beyond their rows).
"""

from __future__ import annotations

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.money import Money
from domain.refunds import RefundStatus
from domain.status import PaymentStatus
from persistence.attempts import ATTEMPT_SUCCEEDED
from persistence.outbox import OutboxMessage
from persistence.payment_begin import Started
from persistence.payment_store import PaymentStore
from persistence.provider_refund_store import ProviderRefundStore
from persistence.refund_store import RefundStarted, RefundStore
from persistence.tables import payments
from tests.integration.test_refund_store import _event, refund_of, succeeded_payment
from tests.support.attempt_migrations import columns_of, migrate
from tests.support.builders import create_payment, unexpected_refusal, unique

pytestmark = pytest.mark.integration


def _payment_event(view, _failed_at_provider: int = 0) -> OutboxMessage:
    return OutboxMessage(unique("evt"), "payments.results", view.order_id, b"")


async def _totals(engine: AsyncEngine, payment_id: str) -> tuple[int, int]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(payments.c.refunded_minor, payments.c.refunded_outside_minor).where(
                    payments.c.id == payment_id
                )
            )
        ).one()
    return row.refunded_minor, row.refunded_outside_minor


async def _refunded_through_paygate(refunds: RefundStore, payment, minor: int) -> None:
    begun = await refunds.begin(refund_of(payment, Money(minor, "EUR")), _event)
    assert isinstance(begun, RefundStarted)
    assert await refunds.finish(
        begun.refund.refund_id,
        claim=begun.claim.token,
        status=RefundStatus.SUCCEEDED,
        provider_reference=f"re-{begun.refund.refund_id}",
        error=None,
        event=_event,
    )


async def test_a_refund_absorbed_from_the_provider_is_counted_apart(engine, clock):
    store = PaymentStore(engine, clock)
    refunds = RefundStore(engine, store.writes, clock)
    payment = await succeeded_payment(store)
    await _refunded_through_paygate(refunds, payment, 3_000)
    assert await _totals(engine, payment.payment_request_id) == (3_000, 0)

    # The provider says 50.00 was refunded of the charge in all: 30.00 of it paygate's.
    absorbed = await ProviderRefundStore(store.writes, clock).absorb(
        payment.payment_request_id,
        provider_reference="ch_test",
        provider_refunded_minor=5_000,
        event=_payment_event,
    )
    assert absorbed is not None
    assert absorbed.status is PaymentStatus.PARTIALLY_REFUNDED
    assert await _totals(engine, payment.payment_request_id) == (5_000, 2_000)

    # paygate's later refunds are rows, not the provider's.
    await _refunded_through_paygate(refunds, payment, 1_000)
    assert await _totals(engine, payment.payment_request_id) == (6_000, 2_000)


async def test_a_payment_found_refunded_in_full_counts_all_of_it_outside(engine, clock):
    store = PaymentStore(engine, clock)
    command = create_payment(amount=Money(2_500, "EUR"))
    begun = await store.begin(
        command, provider="sandbox", account_key=b"k", refusal_event=unexpected_refusal
    )
    assert isinstance(begun, Started)
    assert await store.finish(
        command.payment_request_id,
        begun.attempt_key,
        claim=begun.claim.token,
        status=PaymentStatus.REFUNDED,
        attempt_status=ATTEMPT_SUCCEEDED,
        provider_reference="ch_refunded",
        error=None,
        event=OutboxMessage(unique("evt"), "payments.results", command.order_id, b""),
    )
    assert await _totals(engine, command.payment_request_id) == (2_500, 2_500)


async def test_0027_gives_existing_payments_what_their_total_holds_beyond_their_rows(
    engine: AsyncEngine, clock
) -> None:
    store = PaymentStore(engine, clock)
    refunds = RefundStore(engine, store.writes, clock)
    by_paygate = await succeeded_payment(store)
    mixed = await succeeded_payment(store)
    untouched = await succeeded_payment(store)
    await _refunded_through_paygate(refunds, by_paygate, 4_000)
    await _refunded_through_paygate(refunds, mixed, 1_000)

    await migrate(engine, "downgrade", "0024")
    assert "refunded_outside_minor" not in await columns_of(engine, "payments")
    # The previous release recorded 25.00 refunded by hand at the provider: the total only.
    async with engine.begin() as conn:
        await conn.execute(
            update(payments)
            .where(payments.c.id == mixed.payment_request_id)
            .values(refunded_minor=3_500, status=PaymentStatus.PARTIALLY_REFUNDED.value)
        )
    await migrate(engine, "upgrade", "0027")

    assert await _totals(engine, by_paygate.payment_request_id) == (4_000, 0)
    assert await _totals(engine, mixed.payment_request_id) == (3_500, 2_500)
    assert await _totals(engine, untouched.payment_request_id) == (0, 0)
