"""A fake of consumer.ports.StrayRecords (persistence.stray_store.StrayStore)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

from persistence.stray_store import StrayCandidate
from tests.support.fake_database import FakeDatabase, FakeStore


@dataclass
class Reversal:
    status: str
    reference: str | None
    error: str | None


class FakeStrayRecords(FakeStore):
    """Which attempts are
    candidates is the SQL store's query (integration-tested); here a test lists them in
    ``unexamined``. Like the store, it offers each until it is verified or recorded as a
    stray charge, and a recorded one until its reversal is answered."""

    def __init__(self, db: FakeDatabase) -> None:
        super().__init__(db)
        self.unexamined: list[StrayCandidate] = []
        self.verified: list[str] = []
        self.found: dict[str, StrayCandidate] = {}  # by attempt key, reference set
        self.reversals: dict[str, Reversal] = {}

    async def candidates(self, settled_before: datetime, limit: int) -> list[StrayCandidate]:
        await self._enter("candidates", "")
        fresh = [
            c
            for c in self.unexamined
            if c.attempt_key not in self.verified and c.attempt_key not in self.found
        ]
        reversing = [c for key, c in self.found.items() if key not in self.reversals]
        return (fresh + reversing)[:limit]

    async def mark_own_charges(self, limit: int) -> int:
        # The attempts captured payments stand on are the SQL store's (integration-tested);
        # a test's candidates here are never such an attempt.
        await self._enter("mark_own_charges", "")
        return 0

    async def mark_verified(self, attempt_key: str) -> None:
        await self._enter("mark_verified", attempt_key)
        self.verified.append(attempt_key)

    async def record_found(self, candidate: StrayCandidate, provider_reference: str) -> bool:
        await self._enter("record_found", candidate.attempt_key)
        if candidate.attempt_key in self.found:
            return False  # the unique key: another sweeper recorded it first
        self.found[candidate.attempt_key] = dataclasses.replace(
            candidate, stray_reference=provider_reference
        )
        return True

    async def record_reversal(
        self, attempt_key: str, status: str, reference: str | None, error: str | None
    ) -> None:
        await self._enter("record_reversal", attempt_key)
        # Only a reversal under way is answered (the store's WHERE status = 'reversing').
        if attempt_key in self.found and attempt_key not in self.reversals:
            self.reversals[attempt_key] = Reversal(status, reference, error)
