"""Test account numbers and what the sandbox does with each: the single source of truth.

Like a card network's test cards, the payer's account number picks the behaviour, so a test
or a benchmark chooses an outcome by choosing a number. ``docs/sandbox.md`` shows the same
table; a unit test keeps the two in step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from providers.sandbox.records import SandboxErrorCode
from providers.sandbox.refund_records import RefundBehaviour


class AccountOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    # Answered 5xx before processing: nothing is recorded, so nothing can have been charged.
    UNAVAILABLE = "unavailable"


class Timing(StrEnum):
    IMMEDIATE = "immediate"
    SLOW = "slow"  # answers after ``slow_delay_s``
    # Records the outcome, then answers only after ``hang_s``: callers time out first and
    # must find the outcome with a status query.
    HANG = "hang"


_HEADER_TOKEN: Final = re.compile(r"\A[\x21-\x7e]{1,64}\Z")


@dataclass(frozen=True, slots=True)
class Behaviour:
    summary: str
    outcome: AccountOutcome
    timing: Timing = Timing.IMMEDIATE
    error_code: SandboxErrorCode | None = None
    decline_code: str | None = None
    # The first charge call of each payment reference answers 5xx before processing; later
    # calls for that reference (a new attempt key included) take ``outcome``.
    unavailable_first: bool = False
    # Kept on the charge's row, since the ledger cannot tell the number later.
    refunds: RefundBehaviour = RefundBehaviour.SUCCEED
    # Waits ``account_latency_s`` before deciding anything, as a slow acquirer does: nothing
    # is recorded meanwhile, so a status query during the wait finds nothing yet, and a
    # 503 of ``unavailable_first`` comes only after the wait.
    latency: bool = False
    # The ``Retry-After`` header the 503 answers carry, sent as written: the absurd values
    # ("inf", "1e12", "86400") are the point, a caller must bound its own waits.
    retry_after: str | None = None
    # Answers requires_action with a redirect URL on the sandbox (like a 3-D Secure
    # challenge); the charge takes ``outcome`` only when the payer (the test) completes it.
    payer_action: bool = False

    def __post_init__(self) -> None:
        declined = self.outcome is AccountOutcome.DECLINED
        if declined != (self.error_code is not None) or declined != (self.decline_code is not None):
            raise ValueError("exactly the declining behaviours carry an error and decline code")
        if self.outcome is AccountOutcome.UNAVAILABLE and self.timing is not Timing.IMMEDIATE:
            raise ValueError("an unavailable answer is immediate: nothing was processed")
        if self.unavailable_first and self.outcome is not AccountOutcome.SUCCEEDED:
            raise ValueError("only a succeeding behaviour fails first, then succeeds")
        if (
            self.refunds is not RefundBehaviour.SUCCEED
            and self.outcome is not AccountOutcome.SUCCEEDED
        ):
            raise ValueError("only a succeeding charge has refunds to behave differently")
        if self.latency and (
            self.timing is not Timing.IMMEDIATE or self.outcome is AccountOutcome.UNAVAILABLE
        ):
            raise ValueError("a latency number answers right after its wait, and not always 503")
        if self.payer_action and (
            self.outcome is not AccountOutcome.SUCCEEDED
            or self.timing is not Timing.IMMEDIATE
            or self.unavailable_first
            or self.latency
        ):
            raise ValueError("a payer action answers at once, and succeeds once completed")
        if self.retry_after is not None:
            if not (self.outcome is AccountOutcome.UNAVAILABLE or self.unavailable_first):
                raise ValueError("only a behaviour that answers 503 carries a Retry-After")
            if not _HEADER_TOKEN.match(self.retry_after):
                raise ValueError("a Retry-After value is printable ASCII without spaces")


DEFAULT_BEHAVIOUR: Final = Behaviour("succeeds", AccountOutcome.SUCCEEDED)

_DECLINED: Final = AccountOutcome.DECLINED
_CODE: Final = SandboxErrorCode

TEST_ACCOUNTS: Final = MappingProxyType(
    {
        "4242424242424242": DEFAULT_BEHAVIOUR,
        "4000000000000002": Behaviour(
            "declined", _DECLINED, error_code=_CODE.CARD_DECLINED, decline_code="generic_decline"
        ),
        "4000000000009995": Behaviour(
            "declined: insufficient funds",
            _DECLINED,
            error_code=_CODE.INSUFFICIENT_FUNDS,
            decline_code="insufficient_funds",
        ),
        "4000000000000069": Behaviour(
            "declined: invalid account",
            _DECLINED,
            error_code=_CODE.INVALID_ACCOUNT,
            decline_code="invalid_account",
        ),
        "4100000000000019": Behaviour(
            "declined: suspected fraud",
            _DECLINED,
            error_code=_CODE.SUSPECTED_FRAUD,
            decline_code="fraudulent",
        ),
        "4000000000000119": Behaviour(
            "provider error before processing", AccountOutcome.UNAVAILABLE
        ),
        "4000000000000127": Behaviour(
            "provider error before processing once, then succeeds",
            AccountOutcome.SUCCEEDED,
            unavailable_first=True,
        ),
        "4000000000000457": Behaviour(
            "latency, then provider error before processing once, then succeeds",
            AccountOutcome.SUCCEEDED,
            unavailable_first=True,
            latency=True,
        ),
        "4000000000000531": Behaviour(
            "provider error before processing once, asking Retry-After: inf, then succeeds",
            AccountOutcome.SUCCEEDED,
            unavailable_first=True,
            retry_after="inf",
        ),
        "4000000000000549": Behaviour(
            "provider error before processing once, asking Retry-After: 1e12, then succeeds",
            AccountOutcome.SUCCEEDED,
            unavailable_first=True,
            retry_after="1e12",
        ),
        "4000000000000556": Behaviour(
            "provider error before processing once, asking Retry-After: 86400, then succeeds",
            AccountOutcome.SUCCEEDED,
            unavailable_first=True,
            retry_after="86400",
        ),
        "4000000000007726": Behaviour(
            "succeeds; refunds pending, then succeeded",
            AccountOutcome.SUCCEEDED,
            refunds=RefundBehaviour.SETTLE_LATER,
        ),
        "4000000000005126": Behaviour(
            "succeeds; refunds fail", AccountOutcome.SUCCEEDED, refunds=RefundBehaviour.FAIL
        ),
        "4000000000003220": Behaviour(
            "requires a 3-D-Secure-like payer action; succeeds when completed, declined when "
            "denied, expired when closed first",
            AccountOutcome.SUCCEEDED,
            payer_action=True,
        ),
        "4000000000000259": Behaviour("slow success", AccountOutcome.SUCCEEDED, Timing.SLOW),
        "4000000000000440": Behaviour(
            "latency, then succeeds", AccountOutcome.SUCCEEDED, latency=True
        ),
        "4000000000000341": Behaviour(
            "timeout, then succeeded", AccountOutcome.SUCCEEDED, Timing.HANG
        ),
        "4000000000000200": Behaviour(
            "timeout, then declined",
            _DECLINED,
            Timing.HANG,
            error_code=_CODE.CARD_DECLINED,
            decline_code="generic_decline",
        ),
    }
)


def behaviour_for(payer_number: str) -> Behaviour:
    """The behaviour a payer account number selects; unlisted valid numbers succeed."""
    return TEST_ACCOUNTS.get(payer_number, DEFAULT_BEHAVIOUR)
