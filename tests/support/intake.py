"""The consumer's account intake as it runs in production, for tests: the command admitted
along (``AccountIntake.admit_along``), then the vault rows it hands back written in one
transaction, as the payment's begin writes them (``PaymentStore.begin``'s ``along``)."""

from __future__ import annotations

from typing import cast

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from consumer.account_intake import AccountIntake
from domain.payments import CreatePayment
from persistence.group_commit import run_bulks


async def admit_and_write(
    intake: AccountIntake, command: CreatePayment, engine: AsyncEngine | None = None
) -> CreatePayment:
    """``command`` admitted, its new vault rows committed: in one transaction of ``engine``,
    or, without one, by in-memory rows (tests.support.fake_vault_rows), which take any
    transaction's writes and need no connection."""
    vaulted, along = await intake.admit_along(command)
    if engine is None:
        await run_bulks(cast(AsyncConnection, None), along)
    else:
        async with engine.begin() as conn:
            await run_bulks(conn, along)
    return vaulted
