"""The rate limit every facade process sees the same: buckets in the database, leased out.

Each client's token bucket is a row (:mod:`persistence.rate_limit_store`), updated
atomically, so N instances or workers grant a client no more than one would. A database
write per request would cost more than the request, so a process takes tokens a few at a
time (a lease of ``lease_tokens``) and spends them locally; a lease is good for
``lease_s`` only, after which its unspent tokens are dropped, never handed back.

What that gives, and what it costs:

* A client never gets more than its bucket grants: every token spent was taken from the
  shared row first. Spending may lag the take by up to ``lease_s``, so over any interval
  a client makes at most ``burst + rate * (interval + lease_s)`` requests, whatever the
  number of processes.
* A client can be refused a little early: tokens leased by one process sit unused there
  (for at most ``lease_s``) while another process finds the row empty. With the default
  lease, 1/10 of a second's worth of the rate at most.
* One database write per lease instead of per request, and one at a time per client in a
  process: requests that find the lease spent while another request is renewing it wait
  for that renewal and spend from it, instead of each taking a lease of its own (a burst
  of N such requests was N writes, each taking a whole lease, most of it dropped unspent).
  They share its refusal, and its failure (the store unreachable): in an outage they fail
  within the one renewal's timeout, not one after another.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Final, Protocol

DEFAULT_LEASE_S: Final = 0.1
# Leases held per client are few and short; past this many, expired ones are dropped.
_PRUNE_ABOVE: Final = 10_000


class BucketStore(Protocol):
    async def take(
        self, client_id: str, *, count: int, rate_per_s: float, burst: int, now: float
    ) -> float:
        """0.0 if ``count`` tokens were taken, else the seconds until they will be there."""
        ...


def lease_size(rate_per_s: float, burst: int, lease_s: float) -> int:
    """Tokens per lease: a lease's worth of the rate, at most a tenth of the burst, at
    least 1 (one write per request, exact, for slow limits)."""
    return max(1, min(burst // 10, math.floor(rate_per_s * lease_s)))


class SharedRateLimiter:
    def __init__(
        self,
        store: BucketStore,
        *,
        rate_per_s: float,
        burst: int,
        lease_s: float = DEFAULT_LEASE_S,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (rate_per_s > 0 and math.isfinite(rate_per_s)) or burst < 1 or lease_s <= 0:
            raise ValueError("rate_per_s must be positive, burst at least 1, lease_s positive")
        self._store = store
        self._rate = rate_per_s
        self._burst = burst
        self._lease_s = lease_s
        self._lease_tokens = lease_size(rate_per_s, burst, lease_s)
        # Epoch time for the shared rows (comparable across hosts); monotonic time for the
        # local leases (immune to clock steps).
        self._clock = clock
        self._monotonic = monotonic
        self._leases: dict[str, tuple[int, float]] = {}  # client -> (tokens, good until)
        self._renewing: dict[str, _Renewal] = {}  # client -> its lease renewal under way

    async def acquire(self, client_id: str) -> float:
        while True:
            if self._spend_leased(client_id):
                return 0.0
            renewal = self._renewing.get(client_id)
            if renewal is None:
                break
            await renewal.ended.wait()
            if renewal.refused_for is not None:
                # Not even one token was there a moment ago: the same answer, without
                # asking the store again.
                return renewal.refused_for
            if renewal.failed is not None:
                # The store could not be asked (an outage, each try waiting out its
                # timeout): the same failure, rather than each waiting request trying in
                # turn, the last of N after N timeouts.
                raise renewal.failed
            # Granted (spend from its lease) or cancelled (renew again): look again.
        renewal = self._renewing[client_id] = _Renewal()
        try:
            wait_s = await self._renew(client_id)
            if wait_s > 0:
                renewal.refused_for = wait_s
            return wait_s
        except Exception as exc:
            renewal.failed = exc
            raise
        finally:
            del self._renewing[client_id]
            renewal.ended.set()

    def _spend_leased(self, client_id: str) -> bool:
        now = self._monotonic()
        tokens, until = self._leases.get(client_id, (0, now))
        if tokens > 0 and now < until:
            self._leases[client_id] = (tokens - 1, until)
            return True
        return False

    async def _renew(self, client_id: str) -> float:
        """Take a new lease from the shared row and spend its first token; else the wait."""
        count = self._lease_tokens
        wait_s = await self._take(client_id, count)
        if wait_s > 0 and count > 1:
            # Fewer than a lease left: a single token may still be there.
            count = 1
            wait_s = await self._take(client_id, count)
        if wait_s > 0:
            self._leases.pop(client_id, None)
            return wait_s
        granted_at = self._monotonic()
        self._leases[client_id] = (count - 1, granted_at + self._lease_s)
        if len(self._leases) > _PRUNE_ABOVE:
            self._prune(granted_at)
        return 0.0

    async def _take(self, client_id: str, count: int) -> float:
        return await self._store.take(
            client_id, count=count, rate_per_s=self._rate, burst=self._burst, now=self._clock()
        )

    def _prune(self, now: float) -> None:
        for client_id, (_, until) in list(self._leases.items()):
            if until <= now:
                del self._leases[client_id]


class _Renewal:
    """One request taking a new lease for its client; the others wait for its end."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()
        self.refused_for: float | None = None  # the wait, if the bucket refused
        # What the store raised, if it could not be asked; not a cancelled renewer's
        # CancelledError (its client left): the waiting requests then renew themselves.
        self.failed: Exception | None = None
