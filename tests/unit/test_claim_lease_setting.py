"""The claim's lease must cover a call made on a confirmation a third of the lease old
(consumer.claimed_calls) and lasting the provider timeout: a shorter lease could hand a row
over, and let another worker send its call, while the first call is still in flight."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from paygate.settings import Settings

pytestmark = pytest.mark.unit


def test_a_lease_that_cannot_cover_a_fresh_claims_call_is_refused_with_what_to_set():
    with pytest.raises(ValidationError, match="PAYGATE_CLAIM_LEASE_S must exceed one and a half"):
        Settings(claim_lease_s=20, provider_timeout_s=15)


def test_a_lease_one_and_a_half_calls_long_or_more_is_accepted():
    assert Settings(claim_lease_s=31, provider_timeout_s=20).claim_lease_s == 31
    assert Settings().claim_lease_s * 2 / 3 > Settings().provider_timeout_s
