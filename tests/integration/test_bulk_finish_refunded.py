"""A batch of charge finishes where one ends ``refunded`` (paid, then refunded in full at the
provider before paygate heard: domain.status): the bulk UPDATE's per-row CASE sets that
payment's refunded total to all it captured and leaves every other row's alone, as
finish_one does. On SQLite and PostgreSQL (whose driver must type the CASE's parameter)."""

from __future__ import annotations

import asyncio

import pytest

from domain.status import PaymentStatus
from persistence.attempts import ATTEMPT_SUCCEEDED
from tests.integration.test_bulk_writes import _begin, _finish, _row
from tests.support.builders import create_payment, unexpected_refusal

pytestmark = pytest.mark.integration


async def test_a_batch_sets_the_refunded_total_only_of_the_payment_ending_refunded(engine, store):
    commands = [create_payment() for _ in range(3)]
    begun = await asyncio.gather(*(_begin(store, c, unexpected_refusal) for c in commands))
    ends = (PaymentStatus.REFUNDED, PaymentStatus.SUCCEEDED, PaymentStatus.AUTHORIZED)

    results = await asyncio.gather(
        *(
            _finish(store, started, command, status, ATTEMPT_SUCCEEDED)
            for command, started, status in zip(commands, begun, ends, strict=True)
        )
    )

    assert list(results) == [True, True, True]
    rows = [await _row(engine, c.payment_request_id) for c in commands]
    assert [(r.status, r.refunded_minor) for r in rows] == [
        ("refunded", rows[0].amount_minor),
        ("succeeded", 0),
        ("authorized", 0),
    ]
