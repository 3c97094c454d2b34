"""Who pays in a chaos run: the sandbox test numbers fed, and how often each is drawn.

Mostly successes, as in real traffic; declines exercise the failed path. The rest are
there to make retries overlap (``docs/sandbox.md`` has every number's behaviour):

- numbers that fail a payment's first call with 503 (nothing charged), then succeed, so
  retry back-offs are in flight whenever a duplicate or a zombie consumer comes along;
- numbers that keep the acquirer busy for ``--account-latency-s`` before it decides, so
  another worker's call for the same payment has seconds in which to cross it;
- numbers whose 503 asks an absurd ``Retry-After`` (``inf``, ``1e12``, a day): a consumer
  that waits what it is told stalls its partition.

Payments that do not finish at once (:mod:`devtools.chaos.lifecycle_plan`) are paid apart
from this mix: a payer action with :data:`PAYER_ACTION_CARD`, an authorization with
:data:`AUTHORIZE_PAYER_MIX` (mostly successes, so that captures and cancels find a hold).
"""

from __future__ import annotations

from typing import Final

from providers.sandbox.accounts import behaviour_for

SUCCESS_CARD: Final = "4242424242424242"
DECLINED_CARD: Final = "4000000000000002"
INSUFFICIENT_FUNDS_CARD: Final = "4000000000009995"
# Charges succeed; their refunds are answered pending and settle later (the refund
# reconciler's path), or are declined by the acquirer (the reservation is released).
REFUNDS_SETTLE_LATER_CARD: Final = "4000000000007726"
REFUNDS_FAIL_CARD: Final = "4000000000005126"
FAILS_ONCE_CARD: Final = "4000000000000127"
LATENCY_CARD: Final = "4000000000000440"
LATENCY_FAILS_ONCE_CARD: Final = "4000000000000457"
RETRY_AFTER_INF_CARD: Final = "4000000000000531"
RETRY_AFTER_1E12_CARD: Final = "4000000000000549"
RETRY_AFTER_DAY_CARD: Final = "4000000000000556"
# Answers requires_action: the charge waits for the payer (the harness) to act.
PAYER_ACTION_CARD: Final = "4000000000003220"
PAYEE_IBAN: Final = "DE89370400440532013000"

PAYER_MIX: Final = (
    (SUCCESS_CARD, 0.56),
    (REFUNDS_SETTLE_LATER_CARD, 0.05),
    (REFUNDS_FAIL_CARD, 0.05),
    (DECLINED_CARD, 0.08),
    (INSUFFICIENT_FUNDS_CARD, 0.07),
    (FAILS_ONCE_CARD, 0.06),
    (LATENCY_CARD, 0.04),
    (LATENCY_FAILS_ONCE_CARD, 0.06),
    (RETRY_AFTER_INF_CARD, 0.01),
    (RETRY_AFTER_1E12_CARD, 0.01),
    (RETRY_AFTER_DAY_CARD, 0.01),
)

AUTHORIZE_PAYER_MIX: Final = (
    (SUCCESS_CARD, 0.7),
    (FAILS_ONCE_CARD, 0.1),
    (LATENCY_CARD, 0.1),
    (DECLINED_CARD, 0.1),
)

# The Retry-After each absurd number asks, as the header says it, in the order printed.
RETRY_AFTER_CARDS: Final = {
    card: header for card, _ in PAYER_MIX if (header := behaviour_for(card).retry_after) is not None
}


def fails_first(card: str) -> bool:
    """Whether the number answers a payment's first call with 503 (a retry follows)."""
    return behaviour_for(card).unavailable_first


def has_latency(card: str) -> bool:
    return behaviour_for(card).latency
