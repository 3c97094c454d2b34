"""A key a provider's notice reopens is not verified on a lagging search's "no charge", on
SQLite and PostgreSQL.

The sweep takes a "no charge" as final once the provider's search lag has passed since the
last call of the key could land (domain.search_lag), counted from the attempt's closing. A
reopen is the provider's own word that the key charged since -- later than that closing,
at a moment the store does not keep -- so the lag counted from the closing says nothing
about that charge. Before the fix the sweep asked at once (a reopened key comes first),
heard "no charge" from a search not yet showing it, marked the key verified at its new
generation and never asked again: the money stayed taken, unseen. Now a reopened key's "no
charge" from a lagging search is never final: it is asked again until the charge shows, and
is then found and reversed. (The sweep's lag tests are test_stray_search_lag.py.)
"""

from __future__ import annotations

from datetime import datetime

import pytest

from consumer.outcome import Outcome
from consumer.stray_charges import RECHECK_CAP, StraySweep
from persistence.payment_store import PaymentStore
from persistence.stray_store import StrayStore
from providers.registry import Providers
from providers.sandbox import InProcessSandboxProvider
from telemetry.metrics import Metrics
from tests.integration.test_stray_search_lag import HIDDEN, LAG, PASS_EVERY, PASSES, SETTLE, _passes
from tests.support.builders import UNAVAILABLE_CARD, create_payment
from tests.support.clock import Clock
from tests.support.lagging_search import LaggingSearchProvider
from tests.support.stray_setup import (
    charge_under,
    handler_giving_up_after_two_calls,
    unverified_keys,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def lagging(provider: InProcessSandboxProvider, clock: Clock) -> LaggingSearchProvider:
    return LaggingSearchProvider(provider, clock, hidden_for=HIDDEN, declared=LAG)


async def test_a_reopened_key_is_not_verified_on_a_search_not_showing_its_charge_yet(
    store: PaymentStore, lagging, provider, engine, clock: Clock, metrics: Metrics
):
    strays = StrayStore(store.engine, store.writes, clock)
    sweep = StraySweep(
        store=strays,
        providers=Providers.of(lagging),
        metrics=metrics,
        settle_after=SETTLE,
        clock=clock,
    )
    handler = handler_giving_up_after_two_calls(store, lagging, clock)
    command = create_payment(payer_number=UNAVAILABLE_CARD)
    assert await handler.handle(command) is Outcome.FAILED
    attempt_key = f"{command.payment_request_id}-a1"
    # Nothing under the key: verified once the lag has passed since its closing.
    assert (await _passes(sweep, clock, PASSES)).verified == 1
    assert attempt_key not in await unverified_keys(engine)

    # Hours after, the key charges after all and the provider's notice says so.
    late = create_payment(order_id=command.order_id, idempotency_key=command.idempotency_key)
    charged = await charge_under(lagging, late, attempt_key)
    assert await strays.reopen(attempt_key, lagging.name)
    reopened_at = clock.now

    clock.now += PASS_EVERY
    first = await sweep.run_once()

    # Asked at once; the search does not show the charge yet: that "no" is not final.
    assert lagging.hidden_answers == 1
    assert (first.checked, first.verified, first.unsettled) == (1, 0, 1)
    assert attempt_key in await unverified_keys(engine), "a reopen lost to a lagging search"

    report = await _passes(sweep, clock, PASSES)

    assert (report.found, report.reversed) == (1, 1)
    (refund,) = await provider.acquirer.refunds()
    assert refund.charge_id == charged.provider_reference
    (stray,) = await strays.all()
    assert (stray["attempt_key"], stray["status"]) == (attempt_key, "reversed")
    # Asked again within the sweep's longest pause once the search shows it.
    found_at = stray["found_at"]
    assert isinstance(found_at, datetime)
    assert found_at <= reopened_at + HIDDEN + RECHECK_CAP + PASS_EVERY
