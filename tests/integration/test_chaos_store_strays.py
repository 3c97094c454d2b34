"""The chaos run reads the store's stray-charge ledger with its refunds
(devtools.chaos.refund_evidence.read_store_refunds), on SQLite and PostgreSQL: the verdict
tells a stray charge's reversal refund, paygate's own, from a refund made outside paygate by
the attempt keys read here (tests/unit/test_chaos_refund_verdict.py)."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from devtools.chaos.refund_evidence import read_store_refunds
from tests.support.attempt_migrations import paid_candidate

pytestmark = pytest.mark.integration


async def test_the_store_refunds_name_the_stray_charges_of_the_payments_read(
    engine: AsyncEngine, handler, store, clock
) -> None:
    strays, found = await paid_candidate(handler, store, clock)
    _, other = await paid_candidate(handler, store, clock)
    assert await strays.record_found(found, "pi_stray")
    assert await strays.record_found(other, "pi_other_stray")

    read = await read_store_refunds(engine, [found.payment_id])

    assert read.stray_attempt_keys == frozenset({found.attempt_key})  # this payment's only
    paid = await store.get_payment(found.payment_id)
    assert paid is not None
    assert paid.provider_reference is not None
    # The charge it stands on: a refund of it is never taken for a stray reversal.
    assert read.own_charge_references == frozenset({paid.provider_reference})
    assert set(read.payments) == {found.payment_id}
