"""A short-lived cache in front of an :class:`~http_facade.auth.Authenticator`.

Without it every request costs a database read. Only successful lookups are cached, for
``ttl_s`` seconds, in this process: a revoked key keeps working on a facade instance for
at most that long (docs/authentication.md). Entries are keyed by the SHA-256 of the key,
so the clear key is not kept in memory beyond the request that carried it.

A client whose vault was closed (``paygate keys shred-client``) is not looked up here
either: that would cost the database read per request this cache saves. Its revoked key
may be accepted until its entry expires, but the vault refuses to store any card of it
(vault.rows: ``client_shredded``), which is what the shred must guarantee.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from http_facade.auth import Authenticator

# Enough for every client of a deployment; bounded so that no stream of keys can make the
# cache grow without end.
MAX_ENTRIES: Final = 10_000


class CachedAuthenticator:
    def __init__(
        self,
        inner: Authenticator,
        *,
        ttl_s: float,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s < 0 or max_entries < 1:
            raise ValueError("ttl_s must be >= 0 and max_entries >= 1")
        self._inner = inner
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()

    async def authenticate(self, api_key: str) -> str | None:
        if self._ttl_s == 0:
            return await self._inner.authenticate(api_key)
        digest = hashlib.sha256(api_key.encode("utf-8", "surrogateescape")).hexdigest()
        now = self._clock()
        cached = self._entries.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        client_id = await self._inner.authenticate(api_key)
        if client_id is None:
            self._entries.pop(digest, None)
            return None
        self._entries[digest] = (now + self._ttl_s, client_id)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)  # the entry written longest ago
        return client_id
