"""When to try a provider again after it certainly did not charge (5xx, refused, 429).

A timeout (outcome unknown) is never retried this way: it is resolved by asking the
provider.

**The wait** after failed attempt ``n`` is exponential (``base_delay_s * 2**(n-1)``), capped
at ``max_delay_s``, jittered over the upper half of that step, and never sooner than the
provider's own ``Retry-After``, which is itself capped at ``max_retry_after_s``: whatever a
provider sends (``inf``, ``NaN``, ``1e12``, a day), the wait is finite and at most
``max(max_delay_s, max_retry_after_s)``.

**The budget** is counted in attempts, in time, or both; a payment is retried while every
limit that is set allows it:

- ``max_attempts``: provider calls per payment, failovers included;
- ``budget_s``: seconds of back-off. Given ``elapsed_s`` (wall-clock seconds since the
  payment's first attempt), retry while ``elapsed_s < budget_s``. Without it (the handlers
  know only the attempt number), retry while the back-offs already taken add up, at their
  *least*, to less than ``budget_s``. That is why the jitter keeps to the upper half of each
  step rather than going down to 0 ("full jitter"): the lower half is what guarantees that
  a payment given up on has waited at least ``budget_s``, i.e. rode out an outage that long,
  from the attempt number alone. Half a step still spreads the retries of many payments.

Invariants: ``delay_s`` is finite, in ``[0, max(max_delay_s, max_retry_after_s)]``; and with
``budget_s`` set and no ``elapsed_s``, the delays of attempts ``1 .. n-1`` of a payment that
:meth:`RetryPolicy.may_retry_after` stops at attempt ``n`` add up to at least ``budget_s``
(when every attempt went to one provider: a failover consumes an attempt number without a
back-off, so across a route of ``k`` providers the guarantee is about ``budget_s / k``;
``elapsed_s`` makes it exact).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final

# 2**62 times any sane base delay is beyond any cap; the bound keeps 2**n a float for huge n.
_MAX_EXPONENT: Final = 62


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The defaults are the library's (four attempts); the consumer's policy is built from
    the settings (``PAYGATE_PROVIDER_RETRY_BUDGET_S`` and friends, see
    :mod:`paygate.settings`)."""

    max_attempts: int | None = 4  # None: as many as the time budget allows
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    budget_s: float | None = None  # None: attempts alone decide
    max_retry_after_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 < self.base_delay_s <= self.max_delay_s < math.inf:
            raise ValueError("need 0 < base_delay_s <= max_delay_s, finite")
        if self.budget_s is not None and not 0 <= self.budget_s < math.inf:
            raise ValueError("budget_s must be finite and at least 0")
        if not 0 <= self.max_retry_after_s < math.inf:
            raise ValueError("max_retry_after_s must be finite and at least 0")
        if self.max_attempts is None and self.budget_s is None:
            # A provider that stays down would hold the payment forever.
            raise ValueError("need max_attempts or budget_s")

    def may_retry_after(self, attempt_no: int, elapsed_s: float | None = None) -> bool:
        """Whether failed attempt ``attempt_no`` (1-based) may be followed by another.

        ``elapsed_s``, when known, measures the time budget by the clock instead of by the
        least back-off the attempt number implies.
        """
        if self.max_attempts is not None and attempt_no >= self.max_attempts:
            return False
        if self.budget_s is None:
            return True
        waited = self.least_wait_s(attempt_no - 1) if elapsed_s is None else elapsed_s
        # NaN compares False: an unreadable clock reading ends the retries, never loops.
        return waited < self.budget_s

    def delay_s(
        self, attempt_no: int, retry_after_s: float | None, rng: random.Random | None = None
    ) -> float:
        """The wait after failed attempt ``attempt_no`` (1-based)."""
        ceiling = self._ceiling(attempt_no)
        jittered = (rng or random).uniform(ceiling / 2, ceiling)
        return max(jittered, self._provider_wait(retry_after_s))

    def least_wait_s(self, delays: int) -> float:
        """The least the first ``delays`` back-offs can add up to (each at least half its
        step). The capped steps are counted in one multiplication, so this is cheap for any
        count."""
        total = 0.0
        for n in range(1, delays + 1):
            ceiling = self._ceiling(n)
            if ceiling >= self.max_delay_s or n > _MAX_EXPONENT:
                return total + (delays - n + 1) * ceiling / 2
            total += ceiling / 2
        return total

    def _ceiling(self, attempt_no: int) -> float:
        exponent = min(max(attempt_no, 1) - 1, _MAX_EXPONENT)
        return min(self.max_delay_s, self.base_delay_s * 2.0**exponent)

    def _provider_wait(self, retry_after_s: float | None) -> float:
        # Defence in depth: providers.errors bounds retry_after already, but a wait that
        # reaches this domain rule some other way must not overflow a timedelta either.
        if retry_after_s is None or math.isnan(retry_after_s) or retry_after_s <= 0:
            return 0.0
        return min(retry_after_s, self.max_retry_after_s)
