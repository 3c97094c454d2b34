"""The SQL status of a refunded payment (persistence.payment_rows.status_with_refunds_of)
agrees with the domain's rule (domain.provider_refunds.status_with_refunds), on both
databases: the refund settle and the refund failed after success compute it in SQL, the
bulk refund finish in Python, and all must say the same for the same totals."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Subquery, literal_column, select, union_all
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.provider_refunds import status_with_refunds
from domain.status import PaymentStatus
from persistence.payment_rows import status_with_refunds_of

pytestmark = pytest.mark.integration

# (amount, captured or None for "all of it", refunded): each side of both thresholds.
CASES = [
    (amount, captured, refunded)
    for amount, captured in [(1000, None), (1000, 600), (1, None)]
    for refunded in [-1, 0, 1, 599, 600, 601, 999, 1000, 1001]
]


# Typed: PostgreSQL gives a bare NULL in a UNION's first branch the type text.
_NULL = "CAST(NULL AS BIGINT)"


def _grid() -> Subquery:
    rows: list[Any] = [
        select(
            literal_column(str(index)).label("n"),
            literal_column(str(amount)).label("amount_minor"),
            literal_column(_NULL if captured is None else str(captured)).label("captured_minor"),
            literal_column(str(refunded)).label("refunded"),
        )
        for index, (amount, captured, refunded) in enumerate(CASES)
    ]
    return union_all(*rows).subquery("grid")


async def test_the_sql_status_is_the_domain_status(engine: AsyncEngine) -> None:
    grid = _grid()
    query = select(grid.c.n, status_with_refunds_of(grid, grid.c.refunded)).order_by(grid.c.n)
    async with engine.connect() as conn:
        answered = {n: PaymentStatus(status) for n, status in (await conn.execute(query)).all()}
    expected = {
        index: status_with_refunds(amount if captured is None else captured, refunded)
        for index, (amount, captured, refunded) in enumerate(CASES)
    }
    assert answered == expected
    # Each of the three statuses is among the answers: the grid crosses both thresholds.
    assert set(answered.values()) == {
        PaymentStatus.SUCCEEDED,
        PaymentStatus.PARTIALLY_REFUNDED,
        PaymentStatus.REFUNDED,
    }
