"""The stray-charge sweep, with the situation forced in the store and at the sandbox
acquirer (its real ledger), on SQLite and PostgreSQL.

A stray charge cannot be made by paygate's workers (test_payment_ownership.py shows it for
every schedule); these tests make one by hand, as a bug or a provider fault would, and check
the sweep finds it, reverses it through the provider under its own key, records it, counts
it and says so at error level.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from consumer.outcome import Outcome
from consumer.stray_charges import StraySweep
from domain.money import Money
from domain.status import PaymentStatus
from persistence.stray_store import StrayStore
from persistence.tables import provider_attempts
from providers.registry import Providers
from providers.sandbox.records import SandboxStatus
from providers.sandbox.refund_records import SandboxRefundParams
from tests.support.builders import UNAVAILABLE_CARD, create_payment
from tests.support.stray_setup import (
    charge_under,
    handler_giving_up_after_two_calls,
    unverified_keys,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def handler(store, provider, clock):
    """Gives up after two calls: these tests run a payment's retries to the end."""
    return handler_giving_up_after_two_calls(store, provider, clock)


@pytest.fixture
def sweep(store, provider, metrics, clock):
    return StraySweep(
        store=StrayStore(store.engine, store.writes, clock),
        providers=Providers.of(provider),
        metrics=metrics,
        settle_after=timedelta(minutes=5),
        clock=clock,
    )


def _stray_count(metrics, result):
    value = metrics.registry.get_sample_value(
        "paygate_stray_charges_total", {"provider": "sandbox", "result": result}
    )
    return value or 0.0


async def test_a_charge_under_a_failed_payments_key_is_found_and_reversed(
    handler, store, provider, sweep, metrics, clock, caplog
):
    command = create_payment(payer_number=UNAVAILABLE_CARD)
    assert await handler.handle(command) is Outcome.FAILED
    attempt_key = f"{command.payment_request_id}-a1"
    # A call of that key, in flight all along, charges after all (a test card the sandbox
    # charges: the sandbox decides by card, so the late call uses a charging one).
    late = create_payment(order_id=command.order_id, idempotency_key=command.idempotency_key)
    charged = await charge_under(provider, late, attempt_key)

    assert (await sweep.run_once()).checked == 0  # not settled yet: a call may be in flight
    clock.now += timedelta(minutes=6)
    with caplog.at_level(logging.ERROR, logger="paygate.reconciler"):
        report = await sweep.run_once()
    assert (report.checked, report.reversed) == (1, 1)
    assert "stray charge" in caplog.text

    (refund,) = await provider.acquirer.refunds()
    assert refund.charge_id == charged.provider_reference
    assert refund.amount_minor == command.amount.minor_units
    (stray,) = await StrayStore(store.engine, store.writes).all()
    assert (stray["attempt_key"], stray["status"]) == (attempt_key, "reversed")
    assert (_stray_count(metrics, "found"), _stray_count(metrics, "reversed")) == (1, 1)
    # The payment still says what it is; the attempt says what the provider did.
    assert (await store.get_payment(command.payment_request_id)).status is PaymentStatus.FAILED
    assert (await sweep.run_once()).checked == 0  # once found, never again


async def test_a_stray_authorization_is_voided_at_the_provider(
    handler, store, provider, sweep, metrics, clock
):
    command = dataclasses.replace(create_payment(payer_number=UNAVAILABLE_CARD), capture=False)
    assert await handler.handle(command) is Outcome.FAILED
    attempt_key = f"{command.payment_request_id}-a1"
    late = create_payment(order_id=command.order_id, idempotency_key=command.idempotency_key)
    held = await charge_under(provider, late, attempt_key, capture=False)
    clock.now += timedelta(minutes=6)

    report = await sweep.run_once()

    assert (report.checked, report.reversed) == (1, 1)
    (charge,) = await provider.acquirer.charges()
    assert (charge.charge_id, charge.status) == (held.provider_reference, SandboxStatus.CANCELED)
    assert await provider.acquirer.refunds() == []  # nothing was taken, nothing refunded
    (stray,) = await StrayStore(store.engine, store.writes).all()
    assert stray["status"] == "reversed"
    assert _stray_count(metrics, "reversed") == 1


async def test_an_attempt_left_open_on_a_final_payment_is_examined(
    handler, store, provider, sweep, engine, clock
):
    command = create_payment()
    assert await handler.handle(command) is Outcome.SUCCEEDED
    pid = command.payment_request_id
    # A bug leaves a second attempt open, and the provider charged it.
    async with engine.begin() as conn:
        await conn.execute(
            provider_attempts.insert().values(
                attempt_key=f"{pid}-a2",
                payment_id=pid,
                attempt_no=2,
                provider="sandbox",
                status="started",
                created_at=clock.now,
            )
        )
    await charge_under(provider, command, f"{pid}-a2")
    report = await sweep.run_once()
    # a2 is a stray charge; a1 (a later attempt follows it now) is the payment's own.
    assert (report.checked, report.reversed, report.verified) == (2, 1, 1)
    assert len(await provider.acquirer.refunds()) == 1
    async with engine.connect() as conn:
        open_attempts = (
            await conn.execute(
                select(provider_attempts.c.attempt_key)
                .where(provider_attempts.c.payment_id == pid)
                .where(provider_attempts.c.finished_at.is_(None))
            )
        ).all()
    assert open_attempts == []


async def test_the_payments_own_charge_and_uncharged_keys_are_verified_not_reversed(
    handler, store, provider, sweep, engine, clock
):
    charged = create_payment()
    assert await handler.handle(charged) is Outcome.SUCCEEDED
    failed = create_payment(payer_number=UNAVAILABLE_CARD)
    assert await handler.handle(failed) is Outcome.FAILED
    # The paid attempt reopened by a bug: its charge is the payment's own.
    async with engine.begin() as conn:
        await conn.execute(
            update(provider_attempts)
            .where(provider_attempts.c.attempt_key == f"{charged.payment_request_id}-a1")
            .values(finished_at=None)
        )
    clock.now += timedelta(minutes=6)
    report = await sweep.run_once()
    assert (report.checked, report.verified, report.found) == (2, 2, 0)
    assert await provider.acquirer.refunds() == []
    assert (await sweep.run_once()).checked == 0  # each key is asked about once


async def test_a_pass_reads_new_work_only_and_still_finds_a_new_stray(
    handler, store, provider, sweep, engine, clock
):
    paid = [create_payment() for _ in range(3)]
    for command in paid:
        assert await handler.handle(command) is Outcome.SUCCEEDED
    # The charges the payments stand on are not candidates; the pass marks them, so no
    # later pass reads them again, however long the history grows.
    assert (await sweep.run_once()).checked == 0
    assert await unverified_keys(engine) == []

    # New work: a failed payment whose key the provider charged late.
    failed = create_payment(payer_number=UNAVAILABLE_CARD)
    assert await handler.handle(failed) is Outcome.FAILED
    attempt_key = f"{failed.payment_request_id}-a1"
    late = create_payment(order_id=failed.order_id, idempotency_key=failed.idempotency_key)
    await charge_under(provider, late, attempt_key)
    assert await unverified_keys(engine) == [attempt_key]  # only it is read from now on

    clock.now += timedelta(minutes=6)
    report = await sweep.run_once()
    assert (report.checked, report.reversed) == (1, 1)
    assert await unverified_keys(engine) == []
    assert (await sweep.run_once()).checked == 0


async def test_an_authorized_payments_charge_is_not_marked_its_own_while_it_may_be_voided(
    handler, sweep, engine
):
    held = dataclasses.replace(create_payment(), capture=False)
    assert await handler.handle(held) is Outcome.AUTHORIZED
    # Held, not captured: a void may still release it, and then the sweep must ask.
    assert (await sweep.run_once()).checked == 0
    assert await unverified_keys(engine) == [f"{held.payment_request_id}-a1"]


async def stray_charge(handler, provider, command):
    """A failed payment whose key the provider charged late: the charge's reference."""
    assert await handler.handle(command) is Outcome.FAILED
    late = create_payment(order_id=command.order_id, idempotency_key=command.idempotency_key)
    charged = await charge_under(provider, late, f"{command.payment_request_id}-a1")
    assert charged.provider_reference is not None
    return charged.provider_reference


async def refund_in_the_dashboard(provider, charge_id: str, amount: Money) -> None:
    """A refund made at the acquirer by hand, not through paygate."""
    await provider.acquirer.refund(
        f"dashboard-{charge_id}-{amount.minor_units}",
        SandboxRefundParams(
            charge_id=charge_id,
            amount=amount,
            refund_reference="dashboard",
            payment_reference="dashboard",
            reason=None,
        ),
    )


async def test_a_stray_charge_refunded_in_part_outside_paygate_is_reversed_for_what_remains(
    handler, store, provider, sweep, metrics, clock
):
    """Before, the sweep asked to refund the whole charge: the acquirer refused it (more
    than remains) and the stray charge was left in place, ``reversal_failed``."""
    command = create_payment(payer_number=UNAVAILABLE_CARD)
    charge_id = await stray_charge(handler, provider, command)
    outside = Money(300, command.amount.currency)
    await refund_in_the_dashboard(provider, charge_id, outside)
    clock.now += timedelta(minutes=6)

    report = await sweep.run_once()

    assert (report.checked, report.found, report.reversed, report.reversal_failed) == (1, 1, 1, 0)
    kept = command.amount.minor_units - 300
    reversal = [r for r in await provider.acquirer.refunds() if "-reversal" in r.idempotency_key]
    assert [(r.idempotency_key, r.amount_minor) for r in reversal] == [
        (f"{command.payment_request_id}-a1-reversal-{kept}", kept)  # a key for that amount
    ]
    assert await provider.acquirer.refunded_of(charge_id) == command.amount.minor_units
    (stray,) = await StrayStore(store.engine, store.writes).all()
    assert stray["status"] == "reversed"
    assert (_stray_count(metrics, "reversed"), _stray_count(metrics, "reversal_failed")) == (1, 0)


async def test_a_stray_charge_refunded_in_full_outside_paygate_is_reversed_without_a_refund(
    handler, store, provider, sweep, metrics, clock
):
    command = create_payment(payer_number=UNAVAILABLE_CARD)
    charge_id = await stray_charge(handler, provider, command)
    await refund_in_the_dashboard(provider, charge_id, command.amount)
    clock.now += timedelta(minutes=6)

    report = await sweep.run_once()

    # Found (the money was taken), nothing left to return: reversed, no refund asked.
    assert (report.checked, report.found, report.reversed, report.reversal_failed) == (1, 1, 1, 0)
    assert [r.idempotency_key for r in await provider.acquirer.refunds()] == [
        f"dashboard-{charge_id}-{command.amount.minor_units}"
    ]
    (stray,) = await StrayStore(store.engine, store.writes).all()
    assert stray["status"] == "reversed"
