"""The chaos run's refund checks (devtools/chaos/refund_verdict.py) over hand-built facts.

The acquirer's ledger is the witness of refunds made outside paygate: what it refunded of a
payment's charges under no refund of paygate's. A stray charge's reversal (a refund under
``<attempt key>-reversal``) is under no refund row either, yet it is paygate's own, of a
charge the payment does not stand on. Counted as refunded outside, a run that reversed a
stray charge of a payment that also has refunds failed its verdict falsely. The reversals
are told by the store's stray-charge ledger and their key, never by the key alone.
"""

from __future__ import annotations

from collections import Counter

import pytest

from devtools.chaos.evidence import LedgerCharge, LedgerEvidence, LedgerRefund, RefundEventSeen
from devtools.chaos.refund_evidence import StoredPayment, StoredRefund, StoreRefunds
from devtools.chaos.refund_plan import PlannedRefund, RefundIntent
from devtools.chaos.refund_verdict import RefundFacts, judge_refunds
from devtools.chaos.report import Verdict

pytestmark = pytest.mark.unit

PAYMENT = "pay_1"
CAPTURED = 1_000
OWN = LedgerCharge("ch_own", f"{PAYMENT}-a2", "succeeded", CAPTURED, CAPTURED, None)
STRAY = LedgerCharge("ch_stray", f"{PAYMENT}-a1", "succeeded", CAPTURED, CAPTURED, None)
FED = PlannedRefund("ref_1", PAYMENT, "order_1", 300, RefundIntent.PARTIAL, b"")


def refund_row(key: str, charge: LedgerCharge, amount: int) -> LedgerRefund:
    # The sandbox acquirer keeps paygate's refund id, sent as the idempotency key.
    return LedgerRefund(key, key, charge.charge_id, PAYMENT, amount, "succeeded")


def ledger(*extra: LedgerRefund) -> LedgerEvidence:
    return LedgerEvidence(
        max_charges_per_reference=2,
        double_charged_references=1,
        succeeded_charges=Counter({PAYMENT: 2}),
        declined=frozenset(),
        refunds=(refund_row(FED.refund_id, OWN, 300), *extra),
        captured={OWN.charge_id: CAPTURED, STRAY.charge_id: CAPTURED},
        charges={PAYMENT: (STRAY, OWN)},
    )


def facts(*, outside: int = 0, strays: frozenset[str] = frozenset({STRAY.key})) -> RefundFacts:
    refunded = 300 + outside
    store = StoreRefunds(
        refunds={FED.refund_id: StoredRefund(FED.refund_id, PAYMENT, "succeeded", 300, None)},
        payments={PAYMENT: StoredPayment("partially_refunded", CAPTURED, refunded, 0, outside)},
        stray_attempt_keys=strays,
        own_charge_references=frozenset({OWN.charge_id}),
    )
    events = {FED.refund_id: [RefundEventSeen("succeeded", 300, None, "partially_refunded")]}
    return RefundFacts([FED], store, events)


def violations(facts: RefundFacts, ledger: LedgerEvidence) -> list[str]:
    verdict = Verdict()
    judge_refunds(verdict, facts, ledger, [PAYMENT])
    return [violation.check for violation in verdict.violations]


def test_a_run_without_a_stray_charge_passes():
    assert violations(facts(), ledger()) == []


@pytest.mark.parametrize("key", [f"{STRAY.key}-reversal", f"{STRAY.key}-reversal-1000"])
def test_a_stray_charges_reversal_is_paygates_own_not_refunded_outside(key: str):
    assert violations(facts(), ledger(refund_row(key, STRAY, CAPTURED))) == []


TOTALS = "payments whose refund totals or status disagree with their refunds"
NEVER_FED = "ledger refunds for refunds this run never fed"


def test_a_refund_made_outside_paygate_is_still_held_to_the_store():
    by_hand = refund_row("dashboard-1", OWN, 200)
    # A run makes none: reported as such, and held to the store's refunded_outside_minor.
    assert violations(facts(outside=200), ledger(by_hand)) == [NEVER_FED]
    assert violations(facts(), ledger(by_hand)) == [NEVER_FED, TOTALS]


def test_a_refund_made_outside_paygate_that_failed_is_held_to_the_store_taking_it_back():
    """The acquirer failed a refund made by hand: it holds no money, so the store, which
    takes it back from refunded_outside_minor on the provider's word
    (persistence.outside_refund_failed), must count none of it."""
    failed = LedgerRefund("dashboard-1", "dashboard-1", OWN.charge_id, PAYMENT, 200, "failed")
    standing = refund_row("dashboard-2", OWN, 100)
    assert violations(facts(outside=100), ledger(failed, standing)) == [NEVER_FED]
    assert violations(facts(outside=300), ledger(failed, standing)) == [NEVER_FED, TOTALS]


@pytest.mark.parametrize(
    ("row", "strays"),
    [
        # A reversal's key, but the store recorded no stray charge under that attempt.
        (refund_row(f"{STRAY.key}-reversal", STRAY, 200), frozenset()),
        # A reversal's key of the stray attempt, refunding another charge.
        (refund_row(f"{STRAY.key}-reversal", OWN, 200), frozenset({STRAY.key})),
    ],
    ids=["no-stray-recorded", "another-charge"],
)
def test_a_key_that_looks_like_a_reversal_is_not_taken_for_one(row: LedgerRefund, strays):
    assert violations(facts(strays=strays), ledger(row)) == [NEVER_FED, TOTALS]


def test_a_reversal_of_the_charge_the_payment_stands_on_is_never_taken_for_paygates_own():
    """The sweep recorded the payment's own charge (attempt a2, ch_own) as a stray charge
    and refunded it under its reversal key: a good payment's money taken back. Spared as a
    stray reversal, the run passed; it is held to the store as any refund outside."""
    row = refund_row(f"{OWN.key}-reversal", OWN, 200)
    assert violations(facts(strays=frozenset({OWN.key})), ledger(row)) == [NEVER_FED, TOTALS]
