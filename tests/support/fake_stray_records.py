"""A fake of consumer.ports.StrayRecords (persistence.stray_store.StrayStore)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.clock import utc_now
from persistence.claims import Claim, is_claimable, new_claim
from persistence.stray_store import DEFAULT_CLAIM_LEASE, StrayCandidate
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
    stray charge, and a recorded one until its reversal is answered.

    Also the store's :meth:`reopen` (consumer.ports.StrayLeads), with its check
    generations: a reopen unverifies a key and moves its generation on, and
    :meth:`mark_verified` changes nothing for a candidate read at an older generation.

    Its order is the store's: keys never asked (or reopened since) first, then by the time
    :meth:`ask_again_at` stamped (the fake has no clock: a key not due yet is still offered,
    after the others); then the reversals likewise, by :meth:`reverse_again_at`.

    Its reversals' claims are the store's: taken when free or expired, and every write of a
    reversal's progress only while the claim is the writer's (the store's WHERE
    claim_token = :token)."""

    def __init__(
        self,
        db: FakeDatabase,
        clock: Callable[[], datetime] = utc_now,
        lease: timedelta = DEFAULT_CLAIM_LEASE,
    ) -> None:
        super().__init__(db)
        self._clock = clock
        self._lease = lease
        self.claims: dict[str, Claim] = {}  # reversals' claims by attempt key; absent: free
        self.unexamined: list[StrayCandidate] = []
        self.verified: list[str] = []
        self.generations: dict[str, int] = {}  # by attempt key; absent: 0
        self.ask_again: dict[str, datetime] = {}  # by attempt key; absent: never asked
        self.found: dict[str, StrayCandidate] = {}  # by attempt key, reference set
        self.reversals: dict[str, Reversal] = {}
        self.retry: dict[str, datetime] = {}  # reversals by attempt key; absent: never tried

    async def candidates(self, settled_before: datetime, limit: int) -> list[StrayCandidate]:
        await self._enter("candidates", "")
        fresh = sorted(
            (
                dataclasses.replace(c, generation=self.generations.get(c.attempt_key, 0))
                for c in self.unexamined
                if c.attempt_key not in self.verified and c.attempt_key not in self.found
            ),
            key=lambda c: (c.attempt_key in self.ask_again, self.ask_again.get(c.attempt_key)),
        )
        reversing = sorted(
            (c for key, c in self.found.items() if key not in self.reversals),
            key=lambda c: (c.attempt_key in self.retry, self.retry.get(c.attempt_key)),
        )
        return (fresh + reversing)[:limit]

    async def mark_own_charges(self, limit: int) -> int:
        # The attempts captured payments stand on are the SQL store's (integration-tested);
        # a test's candidates here are never such an attempt.
        await self._enter("mark_own_charges", "")
        return 0

    async def ask_again_at(self, candidate: StrayCandidate, at: datetime) -> bool:
        await self._enter("ask_again_at", candidate.attempt_key)
        key = candidate.attempt_key
        if self.generations.get(key, 0) != candidate.generation or key in self.verified:
            return False  # the store's WHERE reopen_count = ... AND verified_at IS NULL
        self.ask_again[key] = at
        return True

    async def mark_verified(self, candidate: StrayCandidate) -> bool:
        await self._enter("mark_verified", candidate.attempt_key)
        if self.generations.get(candidate.attempt_key, 0) != candidate.generation:
            return False  # reopened since it was read: the store's WHERE reopen_count = ...
        self.verified.append(candidate.attempt_key)
        return True

    async def close_unverified(self, candidate: StrayCandidate) -> bool:
        await self._enter("close_unverified", candidate.attempt_key)
        key = candidate.attempt_key
        if self.generations.get(key, 0) != candidate.generation or key in self.verified:
            return False
        # The store's finished_at = coalesce(finished_at, now).
        self.unexamined = [
            dataclasses.replace(c, attempt_finished_at=c.attempt_finished_at or self._clock())
            if c.attempt_key == key
            else c
            for c in self.unexamined
        ]
        return True

    async def reopen(self, attempt_key: str, provider: str) -> bool:
        await self._enter("reopen", attempt_key)
        known = next((c for c in self.unexamined if c.attempt_key == attempt_key), None)
        if known is None or known.provider != provider or attempt_key in self.found:
            return False
        self.verified = [key for key in self.verified if key != attempt_key]
        self.generations[attempt_key] = self.generations.get(attempt_key, 0) + 1
        self.ask_again.pop(attempt_key, None)
        return True

    async def record_found(
        self, candidate: StrayCandidate, provider_reference: str
    ) -> Claim | None:
        await self._enter("record_found", candidate.attempt_key)
        if candidate.attempt_key in self.found:
            return None  # the unique key: another sweeper recorded it first
        self.found[candidate.attempt_key] = dataclasses.replace(
            candidate, stray_reference=provider_reference
        )
        claim = self.claims[candidate.attempt_key] = new_claim(self._clock(), self._lease)
        return claim

    async def claim_reversal(self, attempt_key: str) -> Claim | None:
        await self._enter("claim_reversal", attempt_key)
        held = self.claims.get(attempt_key)
        if attempt_key not in self.found or attempt_key in self.reversals:
            return None  # the store's status IN ('reversing')
        if held is not None and not is_claimable(held.token, held.expires_at, self._clock()):
            return None
        claim = self.claims[attempt_key] = new_claim(self._clock(), self._lease)
        return claim

    async def renew_reversal(self, attempt_key: str, token: str) -> bool:
        await self._enter("renew_reversal", attempt_key)
        if not self._held(attempt_key, token):
            return False
        self.claims[attempt_key] = Claim(token, self._clock() + self._lease)
        return True

    async def release_reversal(self, attempt_key: str, token: str) -> None:
        await self._enter("release_reversal", attempt_key)
        if self._held(attempt_key, token):
            del self.claims[attempt_key]

    def _held(self, attempt_key: str, token: str) -> bool:
        held = self.claims.get(attempt_key)
        return held is not None and held.token == token

    async def reverse_again_at(self, attempt_key: str, at: datetime, *, token: str) -> bool:
        await self._enter("reverse_again_at", attempt_key)
        if attempt_key not in self.found or attempt_key in self.reversals:
            return False  # the store's WHERE status = 'reversing'
        if not self._held(attempt_key, token):
            return False
        self.retry[attempt_key] = at
        return True

    async def note_reversal_key(
        self, attempt_key: str, reversal_key: str, *, replacing: str | None, token: str
    ) -> bool:
        await self._enter("note_reversal_key", attempt_key)
        if attempt_key not in self.found or attempt_key in self.reversals:
            return False  # the store's WHERE status = 'reversing'
        if not self._held(attempt_key, token):
            return False
        if self.found[attempt_key].reversal_key != replacing:
            return False  # the store's WHERE reversal_key = replacing
        self.found[attempt_key] = dataclasses.replace(
            self.found[attempt_key], reversal_key=reversal_key
        )
        return True

    async def record_reversal(
        self,
        attempt_key: str,
        status: str,
        reference: str | None,
        error: str | None,
        *,
        noted: str | None,
        token: str,
    ) -> bool:
        await self._enter("record_reversal", attempt_key)
        # Only a reversal under way is answered (the store's WHERE status = 'reversing'),
        # by its claim's holder, under the key the answer is about (WHERE reversal_key =
        # noted).
        if attempt_key not in self.found or attempt_key in self.reversals:
            return False
        if not self._held(attempt_key, token) or self.found[attempt_key].reversal_key != noted:
            return False
        self.reversals[attempt_key] = Reversal(status, reference, error)
        del self.claims[attempt_key]  # released with the record
        return True
