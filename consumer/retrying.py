"""One retry loop for provider calls that may be sent again with the same key.

A refusal that certainly did not reach the provider's processing (``retriable`` and not
``outcome_unknown``: a 503, a refused connection, a 429) is retried after the policy's
back-off, with the same idempotency key, while the policy allows. Before every re-send the
caller's claim is checked (``still_owner``, a write that renews it), so a worker that lost
its row to another never sends again. Any other error reaches the caller unchanged.

The check is made once the re-send has its place at the provider (``at``'s call gate,
providers.call_gate.a_place_at), right before it goes out: the wait for a place is bounded
by no lease, and a claim renewed before it could run out in it while another worker, having
taken the row over, calls the provider. No deadlock: the renewal is a write of its own
through the writer queue, which never waits for a place at the gate, and no transaction is
held while waiting for the place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from domain.retry import RetryPolicy
from providers.call_gate import a_place_at
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
    still_owner: Callable[[], Awaitable[bool]],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T | GaveUp | ClaimLost:
    """``call`` (a call to ``at``), re-sent as the module docstring says."""
    attempt = 1
    while True:
        try:
            async with a_place_at(at):
                if attempt > 1 and not await still_owner():
                    return ClaimLost()
                return await call()
        except ProviderError as exc:
            if exc.outcome_unknown or not exc.retriable:
                raise
            if not policy.may_retry_after(attempt):
                return GaveUp(exc)
            await sleep(policy.delay_s(attempt, exc.retry_after))
            attempt += 1
