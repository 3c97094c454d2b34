"""When to try a provider again after it certainly did not charge (5xx, refused, 429).

Exponential back-off with full jitter, capped, and never sooner than the provider's own
``Retry-After``. A timeout (outcome unknown) is never retried this way: it is resolved by
asking the provider.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 4  # provider calls per payment, failovers included
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 < self.base_delay_s <= self.max_delay_s:
            raise ValueError("need 0 < base_delay_s <= max_delay_s")

    def may_retry_after(self, attempt_no: int) -> bool:
        return attempt_no < self.max_attempts

    def delay_s(
        self, attempt_no: int, retry_after_s: float | None, rng: random.Random | None = None
    ) -> float:
        """The wait after failed attempt ``attempt_no`` (1-based)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt_no - 1))
        jittered = (rng or random).uniform(ceiling / 2, ceiling)
        return max(jittered, retry_after_s or 0.0)
