"""A stray charge's reversal refund is told by its key (consumer.stray_charges.reversal_key),
which is also the refund id in its Stripe metadata: a provider's word of that refund
(Stripe's refund.failed) is traced back to the stray charge by it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from consumer.stray_charges import attempt_of_reversal, reversal_key, reversal_key_past_a_void
from domain.money import Money
from domain.status import PaymentStatus
from persistence.stray_store import StrayCandidate

pytestmark = pytest.mark.unit

ATTEMPT = "pay_0123456789abcdef-a2"


def candidate() -> StrayCandidate:
    return StrayCandidate(
        ATTEMPT,
        "pay_0123456789abcdef",
        "stripe",
        Money(1050, "EUR"),
        PaymentStatus.FAILED,
        None,
        "pi_1",
        found_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


@pytest.mark.parametrize("kept", [Money(1050, "EUR"), Money(750, "EUR"), Money(1, "EUR")])
def test_every_reversal_key_names_its_attempt(kept: Money):
    assert attempt_of_reversal(reversal_key(candidate(), kept)) == ATTEMPT


@pytest.mark.parametrize(
    "key",
    [
        "ref_0123456789abcdef0123456789abcdef",  # a refund of paygate's, not a reversal
        "-reversal",
        f"{ATTEMPT}-reversal-",
        f"{ATTEMPT}-reversal-12a",
        f"{ATTEMPT}-reversal-²",
        f"{ATTEMPT}-reversal-{'9' * 20}",
        f"{ATTEMPT}-reversals",
    ],
)
def test_other_keys_name_no_attempt(key: str):
    assert attempt_of_reversal(key) is None


def test_the_key_past_a_void_names_its_attempt_and_is_no_other_amounts_key():
    """The whole amount's refund under a key of its own (its usual key a void's in an older
    release): read as the attempt's reversal, and never the key of a refund of a part, so
    no refund can have been made under it before."""
    past_a_void = reversal_key_past_a_void(candidate())
    assert attempt_of_reversal(past_a_void) == ATTEMPT
    assert past_a_void != reversal_key(candidate(), candidate().amount)
    parts = {reversal_key(candidate(), Money(minor, "EUR")) for minor in range(1, 1050)}
    assert past_a_void not in parts
