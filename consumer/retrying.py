"""One retry loop for provider calls that may be sent again with the same key.

A refusal that certainly did not reach the provider's processing (``retriable`` and not
``outcome_unknown``: a 503, a refused connection, a 429) is retried after the policy's
back-off, with the same idempotency key, while the policy allows. Every send goes out
under the caller's claim (consumer.claimed_calls): once it has its place at the provider's
call gate, the claim is renewed unless a fresh confirmation covers it, so a re-send (whose
confirmation the earlier send spent) always renews, and a first send renews when it waited
long for its place. A worker that lost its row to another never sends again. Any other
error reaches the caller unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from consumer.claimed_calls import ClaimTakenOver, HeldClaim
from domain.retry import RetryPolicy
from providers.errors import ProviderError
from providers.port import PaymentProvider

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GaveUp:
    """The retries ran out; ``error`` is the last refusal."""

    error: ProviderError


@dataclass(frozen=True, slots=True)
class ClaimLost:
    """Another worker took the row over during a back-off: this one must stop."""


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    at: PaymentProvider,
    policy: RetryPolicy,
    claim: HeldClaim,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T | GaveUp | ClaimLost:
    """``call`` (a call to ``at``), sent under ``claim`` and re-sent as the module docstring
    says."""
    attempt = 1
    while True:
        try:
            return await claim.call(at, call)
        except ClaimTakenOver:
            return ClaimLost()
        except ProviderError as exc:
            if exc.outcome_unknown or not exc.retriable:
                raise
            if not policy.may_retry_after(attempt):
                return GaveUp(exc)
            await sleep(policy.delay_s(attempt, exc.retry_after))
            attempt += 1
