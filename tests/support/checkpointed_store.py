"""Real stores whose writes first stop at a checkpoint of an :class:`Interleaving`.

The deterministic ownership tests run several workers over one real database and choose
who moves at every store write. Each worker gets its own store (and its own writer queue):
separate consumer processes share nothing but the database.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.group_commit import GroupCommit
from tests.support.interleaving import Interleaving

Store = TypeVar("Store")

# The writes of a capture, void or refund store, and of the payment store.
FOLLOW_UP_WRITES: Final = ("begin", "claim", "renew", "release", "finish")
PAYMENT_WRITES: Final = (
    "begin",
    "claim",
    "renew",
    "renew_sending",
    "finish",
    "next_attempt",
    "schedule_retry",
)


def checkpointed(
    store_class: type[Store], writes: Sequence[str], *, lease: timedelta, name: str = "store"
) -> Callable[[AsyncEngine, Callable[[], datetime], Interleaving], Store]:
    """``store_class`` made with ``(engine, clock, interleaving)``; each of its ``writes``
    first stops at the checkpoint ``"{name}.{write}"``."""

    class Checkpointed(store_class):  # type: ignore[valid-type,misc]
        def __init__(
            self, engine: AsyncEngine, clock: Callable[[], datetime], interleaving: Interleaving
        ) -> None:
            super().__init__(engine, writes=GroupCommit(engine), clock=clock, claim_lease=lease)
            self._interleaving = interleaving

    for write in writes:
        setattr(Checkpointed, write, _stopping_first(getattr(store_class, write), name, write))
    Checkpointed.__name__ = Checkpointed.__qualname__ = f"Checkpointed{store_class.__name__}"
    return Checkpointed


def _stopping_first(original: Any, name: str, write: str) -> Any:
    checkpoint = f"{name}.{write}"

    async def stop_first(self: Any, *args: Any, **kwargs: Any) -> Any:
        await self._interleaving.checkpoint(checkpoint)
        return await original(self, *args, **kwargs)

    return stop_first
