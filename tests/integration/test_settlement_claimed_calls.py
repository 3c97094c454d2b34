"""``paygate reconcile settle`` calls the provider only under a claim still its own, on
SQLite and PostgreSQL.

The settlement asks the provider about the withheld payment's key, then, asked to fail a
payment whose trade waits for a payer it was never shown, closes the trade. Its claim was
confirmed once, when it was taken, and the question spent that confirmation: the question
lasts up to the provider timeout, near a lease, and another worker may take the payment
over meanwhile. The close then goes out under the claim renewed first, as every second call
of a claim's holder does (consumer.claimed_calls); before, it went out unrenewed, a provider
call made by a former owner, of which only the refused record afterwards said anything.
"""

from __future__ import annotations

import pytest

from consumer.outcome import Outcome
from domain.errors import ErrorCode, PaygateError
from domain.status import PaymentStatus
from persistence.payment_store import DEFAULT_CLAIM_LEASE, PaymentStore
from providers.port import ChargeOutcome
from tests.integration.test_operator_settlement_unshown_action import (
    REASON,
    Rig,
    UnshownTrades,
)
from tests.support.clock import Clock

pytestmark = pytest.mark.integration


class TakenOverWhileAsked(UnshownTrades):
    """Its status question outlasts the asker's lease: while it is being answered, another
    worker takes the payment over (``takeover``, set once the payment is withheld)."""

    def __init__(self) -> None:
        super().__init__()
        self.takeover: PaymentStore | None = None
        self.taken_by_another: list[str] = []
        self._clock: Clock | None = None

    def take_over_with(self, store: PaymentStore, clock: Clock) -> None:
        self.takeover, self._clock = store, clock

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        answer = await super().charge_status(attempt_key)
        if self.takeover is not None and self._clock is not None:
            self._clock.now += DEFAULT_CLAIM_LEASE  # the question lasted a lease
            pid = attempt_key.removesuffix("-a1")
            claimed = await self.takeover.claim(pid)
            assert claimed is not None, "the lease ran out: another worker takes it over"
            self.taken_by_another.append(claimed.claim.token)
            self.takeover = None
        return answer


async def test_a_settlement_whose_claim_was_taken_over_during_its_question_sends_nothing_more(
    store: PaymentStore, clock: Clock
):
    provider = TakenOverWhileAsked()
    rig = Rig(store, clock, provider)
    pid = await rig.withheld(Outcome.PENDING, PaymentStatus.PENDING)
    provider.take_over_with(store, clock)

    with pytest.raises(PaygateError) as refused:
        await rig.settlement.settle(pid, fail_reason=REASON)

    assert refused.value.code is ErrorCode.NOT_WITHHELD
    assert len(provider.taken_by_another) == 1
    # The former owner closed nothing: the trade is the new owner's to end.
    assert provider.closes == []
    assert await rig.status(pid) is PaymentStatus.PENDING
    assert provider.charges == [f"{pid}-a1"]
