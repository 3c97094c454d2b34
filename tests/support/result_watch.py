"""A fake result waiter's ``watch``, built on its ``wait_for_final``: the fakes decide when
a result is final in one place, whichever of the two the route uses."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

WaitForFinal = Callable[[str, float], Awaitable[bool]]


class WatchByWaiting:
    def __init__(self, wait_for_final: WaitForFinal, waited_id: str) -> None:
        self._wait_for_final = wait_for_final
        self._waited_id = waited_id

    async def final(self, timeout_s: float) -> bool:
        return await self._wait_for_final(self._waited_id, timeout_s)


def watch_by_waiting(
    wait_for_final: WaitForFinal, waited_id: str
) -> contextlib.nullcontext[WatchByWaiting]:
    return contextlib.nullcontext(WatchByWaiting(wait_for_final, waited_id))
