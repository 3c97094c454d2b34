"""Per-client rate limit: a token bucket for each authenticated client.

A bucket holds up to ``burst`` tokens and refills at ``rate_per_s``; a request takes one.
An empty bucket answers 429 ``rate_limited`` with ``Retry-After``: the whole seconds until
a token is back, at least 1. The middleware takes any :class:`RateLimiter`: the service
uses :class:`http_facade.shared_rate_limit.SharedRateLimiter`, whose buckets are in the
database so that N facade instances or workers limit a client as one does.
:class:`TokenBuckets` keeps them in this process (each instance then limits on its own).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final, Protocol

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from domain.error_info import ErrorInfo
from domain.errors import ErrorCode
from http_facade.errors import error_response
from http_facade.state import CLIENT_ID

# Buckets are per client, and only authenticated clients get one, so their number is the
# number of clients. Past this many, full buckets (the same as no bucket) are dropped.
_PRUNE_ABOVE: Final = 10_000


class RateLimiter(Protocol):
    async def acquire(self, client_id: str) -> float:
        """Take a token of ``client_id``: 0.0 if one was there, else the seconds until one
        will be."""
        ...


class TokenBuckets:
    def __init__(
        self, *, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not (rate_per_s > 0 and math.isfinite(rate_per_s)) or burst < 1:
            raise ValueError("rate_per_s must be a positive number and burst at least 1")
        self._rate = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, as of)

    def take(self, client_id: str) -> float:
        """Take a token: 0.0 if one was there, else the seconds until one will be."""
        now = self._clock()
        tokens, as_of = self._buckets.get(client_id, (self._burst, now))
        tokens = min(self._burst, tokens + (now - as_of) * self._rate)
        if tokens >= 1:
            self._buckets[client_id] = (tokens - 1, now)
            if len(self._buckets) > _PRUNE_ABOVE:
                self._prune(now)
            return 0.0
        self._buckets[client_id] = (tokens, now)
        return (1 - tokens) / self._rate

    async def acquire(self, client_id: str) -> float:
        return self.take(client_id)

    def _prune(self, now: float) -> None:
        full_after = self._burst / self._rate
        for client_id, (_, as_of) in list(self._buckets.items()):
            if now - as_of >= full_after:
                del self._buckets[client_id]


def rate_limit_middleware(buckets: RateLimiter) -> Middleware:
    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Public routes carry no client, and probes must not be throttled.
        client_id = request.get(CLIENT_ID)
        if client_id is None:
            return await handler(request)
        wait_s = await buckets.acquire(client_id)
        if wait_s > 0:
            return error_response(
                ErrorInfo(ErrorCode.RATE_LIMITED, "too many requests from this client"),
                headers={hdrs.RETRY_AFTER: str(max(1, math.ceil(wait_s)))},
            )
        return await handler(request)

    return limit
