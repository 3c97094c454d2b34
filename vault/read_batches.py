"""Concurrent lookups by key, coalesced into one query per round.

The consumer looks a token up twice per account (its intake, then the provider call), for
up to ``max_in_flight`` payments at once. One query each is a connection checkout and a
thread hop each on aiosqlite: measured, 284 lookups/s, which held the whole pipeline to
70 payments/s. Here the lookups that arrive while a query runs wait for the next one and
are answered by a single ``... IN (...)``: the same answer each would have had (every
query starts after its callers asked), at the cost of one query per round.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Generic, TypeVar

V = TypeVar("V")

Fetch = Callable[[Sequence[str]], Awaitable[Mapping[str, V]]]


class ReadBatches(Generic[V]):
    def __init__(self, fetch: Fetch[V], *, max_batch: int = 500) -> None:
        self._fetch = fetch
        self._max_batch = max_batch
        self._pending: dict[str, list[asyncio.Future[V | None]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def get(self, key: str) -> V | None:
        """What ``fetch`` finds under ``key`` (None: nothing), from a query begun after
        this call; its error if that query fails."""
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append(future)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read())
        return await future

    async def _read(self) -> None:
        while self._pending:
            keys = list(self._pending)[: self._max_batch]
            batch = {key: self._pending.pop(key) for key in keys}
            try:
                found = await self._fetch(keys)
            except Exception as exc:  # every waiter of this round gets it, none is left
                for futures in batch.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(exc)
                continue
            for key, futures in batch.items():
                for future in futures:
                    if not future.done():  # a caller cancelled meanwhile
                        future.set_result(found.get(key))
