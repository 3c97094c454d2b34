"""The sandbox's test account numbers by what they do, taken from their single source,
providers/sandbox/accounts.py (tests import them through tests.support.builders).

Each name is looked up by its behaviour, not typed again: a number changed there changes
here, and a behaviour dropped or listed twice fails at import, naming it. Only
tests/unit/test_sandbox_acquirer.py writes the numbers out, on purpose: it checks the table
against the specification, independently of the code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from providers.sandbox.accounts import (
    DEFAULT_BEHAVIOUR,
    TEST_ACCOUNTS,
    AccountOutcome,
    Behaviour,
    Timing,
)
from providers.sandbox.records import SandboxErrorCode
from providers.sandbox.refund_records import RefundBehaviour


def _number(what: str, test: Callable[[Behaviour], bool]) -> str:
    numbers = [number for number, behaviour in TEST_ACCOUNTS.items() if test(behaviour)]
    if len(numbers) != 1:
        raise LookupError(f"the sandbox lists {len(numbers)} accounts that are {what!r}")
    return numbers[0]


def _declines(code: SandboxErrorCode, timing: Timing = Timing.IMMEDIATE) -> Callable[..., bool]:
    return lambda b: b.error_code is code and b.timing is timing


SUCCESS_CARD: Final = _number("succeeds", lambda b: b is DEFAULT_BEHAVIOUR)
DECLINED_CARD: Final = _number("declined", _declines(SandboxErrorCode.CARD_DECLINED))
INSUFFICIENT_FUNDS_CARD: Final = _number(
    "declined: insufficient funds", _declines(SandboxErrorCode.INSUFFICIENT_FUNDS)
)
INVALID_ACCOUNT_CARD: Final = _number(
    "declined: invalid account", _declines(SandboxErrorCode.INVALID_ACCOUNT)
)
FRAUD_CARD: Final = _number(
    "declined: suspected fraud", _declines(SandboxErrorCode.SUSPECTED_FRAUD)
)
UNAVAILABLE_CARD: Final = _number(
    "unavailable before processing", lambda b: b.outcome is AccountOutcome.UNAVAILABLE
)
UNAVAILABLE_ONCE_CARD: Final = _number(
    "unavailable once, at once, with no Retry-After",
    lambda b: b.unavailable_first and not b.latency and b.retry_after is None,
)
REFUNDS_PENDING_CARD: Final = _number(
    "refunds settle later", lambda b: b.refunds is RefundBehaviour.SETTLE_LATER
)
REFUNDS_FAIL_CARD: Final = _number("refunds fail", lambda b: b.refunds is RefundBehaviour.FAIL)
SLOW_CARD: Final = _number("slow success", lambda b: b.timing is Timing.SLOW)
TIMEOUT_CARD: Final = _number(
    "timeout, then succeeded",
    lambda b: b.timing is Timing.HANG and b.outcome is AccountOutcome.SUCCEEDED,
)
TIMEOUT_THEN_DECLINE_CARD: Final = _number(
    "timeout, then declined", _declines(SandboxErrorCode.CARD_DECLINED, Timing.HANG)
)
PAYER_ACTION_CARD: Final = _number("requires a payer action", lambda b: b.payer_action)

# Payees are not sandbox behaviours: any valid IBAN will do, this one everywhere.
PAYEE_IBAN: Final = "DE89370400440532013000"
