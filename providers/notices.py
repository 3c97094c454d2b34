"""A provider's own word about a charge, received by us (a signed notification), as the
provider port's types: which attempt, what the provider says it came to, for how much."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from domain.money import Money
from providers.port import ChargeOutcome


@dataclass(frozen=True, slots=True)
class ChargeNotice:
    """``attempt_key`` is the key the charge was sent under (Alipay's out_trade_no);
    ``outcome`` is None for news that finishes nothing (the trade still waits)."""

    provider: str
    attempt_key: str
    outcome: ChargeOutcome | None
    amount: Money


class NoticeRefusedError(Exception):
    """A notification that is not the provider's (unsigned, forged, another app) or cannot
    be read: refused, nothing changes."""


class NoticeResult(StrEnum):
    RECORDED = "recorded"  # the payment moved on
    ALREADY = "already"  # it had: a replay, or the reconciler was first
    IGNORED = "ignored"  # nothing to record (the trade still waits for its payer)
    MISMATCH = "mismatch"  # another amount, another trade, another provider: refused
    UNKNOWN = "unknown"  # no such payment or attempt
    BUSY = "busy"  # another worker holds the payment: ask the provider to send it again
    # Money taken under a key the payment does not stand on: handed to the stray-charge
    # sweep (durably), which asks the provider and reverses it; acknowledged.
    STRAY = "stray"
