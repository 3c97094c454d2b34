"""The stray-charge sweep's order (revision 0019, ``provider_attempts.next_sweep_at``), on
SQLite and PostgreSQL: a key no provider answers moves behind the others, so it never hides
a newer stray charge, yet is asked again once its pause is over; a reopen brings a key to
the front; and the stamp never overrides a reopen or a mark.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.outcome import Outcome
from consumer.stray_charges import StraySweep
from persistence.stray_store import StrayStore, attempt_candidates
from persistence.tables import provider_attempts
from providers.registry import Providers
from telemetry.metrics import Metrics
from tests.support.builders import UNAVAILABLE_CARD, create_payment
from tests.support.stray_setup import charge_under, handler_giving_up_after_two_calls

pytestmark = pytest.mark.integration

FIRST = timedelta(minutes=1)
CAP = timedelta(hours=1)


@pytest.fixture
def handler(store, provider, clock):
    """Gives up after two calls: these tests run a payment's retries to the end."""
    return handler_giving_up_after_two_calls(store, provider, clock)


@pytest.fixture
def strays(store, clock) -> StrayStore:
    return StrayStore(store.engine, store.writes, clock)


@pytest.fixture
def sweep(strays, provider, metrics, clock) -> StraySweep:
    return StraySweep(
        store=strays,
        providers=Providers.of(provider),
        metrics=metrics,
        settle_after=timedelta(minutes=5),
        clock=clock,
        recheck_first=FIRST,
        recheck_cap=CAP,
    )


async def _failed_payment(handler) -> str:
    """A failed payment's first attempt key: closed as not charged, a candidate once settled."""
    command = create_payment(payer_number=UNAVAILABLE_CARD)
    assert await handler.handle(command) is Outcome.FAILED
    return f"{command.payment_request_id}-a1"


async def _move_to_a_gone_provider(engine: AsyncEngine, attempt_key: str) -> None:
    """As if the attempt's provider were taken out of the configuration since."""
    async with engine.begin() as conn:
        await conn.execute(
            update(provider_attempts)
            .where(provider_attempts.c.attempt_key == attempt_key)
            .values(provider="gone")
        )


async def _next_sweep_at(engine: AsyncEngine, attempt_key: str):
    async with engine.connect() as conn:
        return await conn.scalar(
            select(provider_attempts.c.next_sweep_at).where(
                provider_attempts.c.attempt_key == attempt_key
            )
        )


async def _charge_under(provider, attempt_key):
    """The provider charges ``attempt_key`` (as a late call would, with a card it charges:
    the sandbox decides by card)."""
    # A fresh command for its accounts, in the clear as the provider gets them.
    return await charge_under(
        provider, create_payment(), attempt_key, payment_request_id=attempt_key.removesuffix("-a1")
    )


def _stray_count(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "paygate_stray_charges_total", {"provider": "sandbox", "result": result}
    )
    return value or 0.0


def _unanswered(metrics: Metrics, provider: str, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "paygate_stray_unanswered_total", {"provider": provider, "reason": reason}
    )
    return value or 0.0


async def test_an_unanswerable_older_key_does_not_hide_a_newer_stray_charge(
    handler, provider, sweep, engine, metrics, clock
) -> None:
    # The reviewer's case: a page of one, the older candidate's provider no longer
    # configured, then a real stray charge under a newer key.
    dead = await _failed_payment(handler)
    await _move_to_a_gone_provider(engine, dead)
    clock.now += timedelta(seconds=1)
    stray_key = await _failed_payment(handler)
    charged = await _charge_under(provider, stray_key)
    clock.now += timedelta(minutes=6)

    first = await sweep.run_once(limit=1)
    second = await sweep.run_once(limit=1)

    assert (first.checked, first.unanswered) == (1, 1)  # the older key, as before
    assert (second.checked, second.found, second.reversed) == (1, 1, 1)
    assert _stray_count(metrics, "reversed") == 1
    assert _unanswered(metrics, "gone", "no_provider") == 1
    (refund,) = await provider.acquirer.refunds()
    assert refund.charge_id == charged.provider_reference


async def test_a_key_without_an_answer_is_asked_again_once_its_pause_is_over(
    handler, sweep, engine, metrics, clock
) -> None:
    dead = await _failed_payment(handler)
    await _move_to_a_gone_provider(engine, dead)
    clock.now += timedelta(minutes=6)

    assert (await sweep.run_once()).unanswered == 1
    # Held back for its age (six minutes, within the first pause and the cap) ...
    assert (await sweep.run_once()).checked == 0
    clock.now += timedelta(minutes=6)
    # ... and never for good: asked again, and held back longer as it ages, up to the cap.
    assert (await sweep.run_once()).unanswered == 1
    clock.now += CAP
    assert (await sweep.run_once()).unanswered == 1
    clock.now += CAP
    assert (await sweep.run_once()).unanswered == 1
    assert _unanswered(metrics, "gone", "no_provider") == 4


async def test_a_reopen_brings_a_key_held_back_to_the_front(
    handler, sweep, strays, engine, clock
) -> None:
    held_back = await _failed_payment(handler)
    clock.now += timedelta(seconds=1)
    newer = await _failed_payment(handler)
    await _move_to_a_gone_provider(engine, held_back)
    clock.now += timedelta(minutes=6)
    assert (await sweep.run_once(limit=1)).unanswered == 1  # the older one, held back now
    assert [c.attempt_key for c in await strays.candidates(clock.now, 1)] == [newer]

    # A provider's notice reopens it (no provider of that name here: by hand, as the
    # notice would).
    assert await strays.reopen(held_back, "gone")

    assert await _next_sweep_at(engine, held_back) is None
    assert [c.attempt_key for c in await strays.candidates(clock.now, 1)] == [held_back]


async def test_a_stamp_read_before_a_reopen_or_a_mark_changes_nothing(
    handler, strays, engine, clock
) -> None:
    key = await _failed_payment(handler)
    clock.now += timedelta(minutes=6)
    (read,) = await strays.candidates(clock.now, 10)
    assert await strays.reopen(key, read.provider)

    # Read at the generation before the reopen: the key stays first.
    assert not await strays.ask_again_at(read, clock.now + CAP)
    assert await _next_sweep_at(engine, key) is None

    (again,) = await strays.candidates(clock.now, 10)
    assert await strays.mark_verified(again)
    # A mark is never undone nor moved by a stamp: verified_at is not its column.
    assert not await strays.ask_again_at(again, clock.now + CAP)
    assert await _next_sweep_at(engine, key) is None
    assert await strays.candidates(clock.now, 10) == []


async def test_the_candidate_query_reads_the_partial_index(engine: AsyncEngine, clock) -> None:
    query = attempt_candidates(clock.now, clock.now, 200)
    compiled = query.compile(engine.sync_engine, compile_kwargs={"literal_binds": True})
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            # The table is empty here: without this the planner rightly prefers a scan.
            await conn.execute(text("SET enable_seqscan = off"))
            plan = "\n".join(await conn.scalars(text(f"EXPLAIN {compiled}")))
        else:
            rows = await conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))
            plan = "\n".join(str(row[-1]) for row in rows)
    assert "ix_provider_attempts_unverified" in plan, plan
