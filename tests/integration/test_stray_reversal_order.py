"""The order of the stray-charge sweep's reversals (revision 0021,
``stray_charges.next_sweep_at``), on SQLite and PostgreSQL: a reversal that gets no answer
moves behind the others, so it never keeps a newer stray charge from being reversed, yet
is tried again once its pause is over.

The attack: a page of stray charges whose reversal keeps getting no answer (the provider
times out on their refunds). Before, the sweep read the reversals under way in no order, a
page at a time: the same unanswered ones came first on every pass, and a newer stray charge
behind them was never reversed -- a customer charged twice for good.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from consumer.outcome import Outcome
from consumer.stray_charges import StraySweep
from domain.status import PaymentStatus
from persistence.stray_store import STRAY_REVERSED, StrayCandidate, StrayStore
from providers.registry import Providers
from tests.support.builders import create_payment
from tests.support.faulty_acquirer import Bench

pytestmark = pytest.mark.integration

FIRST = timedelta(minutes=1)


async def test_an_unanswered_reversal_does_not_starve_a_newer_one(engine):
    bench = Bench(engine)
    clock, acquirer, metrics, handler = bench.clock, bench.acquirer, bench.metrics, bench.payments
    strays = StrayStore(engine, bench.store.writes, clock)
    keys = []
    for _ in range(2):
        command = create_payment()
        key = f"{command.payment_request_id}-a1"
        acquirer.charged_anyway.add(key)
        assert await handler.handle(command) is Outcome.FAILED  # yet charged: a stray charge
        # Recorded by an earlier pass, its reversal under way (the older first), its claim
        # given up when that pass's try ended.
        found = StrayCandidate(
            key,
            command.payment_request_id,
            acquirer.name,
            command.amount,
            PaymentStatus.FAILED,
            None,
        )
        claim = await strays.record_found(found, acquirer.charges[key].provider_reference or "")
        assert claim is not None
        await strays.release_reversal(key, claim.token)
        keys.append(key)
        clock.now += timedelta(seconds=1)
    older, newer = keys
    acquirer.no_answer.add(f"{older}-reversal")  # its reversal never gets an answer
    sweep = StraySweep(
        store=strays,
        providers=Providers.of(acquirer),
        metrics=metrics,
        settle_after=timedelta(0),
        clock=clock,
        recheck_first=FIRST,
    )

    # A page of one: the older comes first, and gets no answer.
    first = await sweep.run_once(limit=1)
    assert (first.checked, first.unanswered, first.reversed) == (1, 1, 0)
    clock.now += timedelta(seconds=30)  # the next pass
    second = await sweep.run_once(limit=1)
    assert (second.checked, second.reversed) == (1, 1)
    assert f"{newer}-reversal" in acquirer.refunds

    # The older is held back, not dropped: tried again once its pause is over.
    clock.now += FIRST
    third = await sweep.run_once(limit=1)
    assert (third.checked, third.unanswered) == (1, 1)
    statuses = {row["attempt_key"]: row["status"] for row in await strays.all()}
    assert statuses[newer] == STRAY_REVERSED
    assert statuses[older] != STRAY_REVERSED
    unanswered = metrics.stray_reversals_unanswered.labels(acquirer.name, "provider_error")
    assert unanswered._value.get() == 2
