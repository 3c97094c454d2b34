"""Who holds each stray charge's reversal claim, as the store answers the sweepers of a
model-based test, and the checks that one sweeper at a time reverses a stray charge.

The sweep's claim (consumer.stray_charges, persistence.stray_store) is what keeps two
sweepers -- two consumer processes, or a pass overlapping the next -- from calling the
provider about one stray charge at once, and a sweeper whose lease ran out (a zombie) from
recording what it learned over the one that took over. The scripted providers are
idempotent by key and the reversal's keys are the same for every try, so a broken claim
moves no money twice there: the ledger alone cannot see it. This watch can. It learns the
claims from the store's own answers (:class:`WatchedStrayStore`: a claim taken with a
record found or by ``claim_reversal``, renewed, released, a fenced write that changed the
row) and from the clock, and the provider tells it of every call (:meth:`calling`):

* a claim is taken only when nobody else's is live: free, released, recorded, or its lease
  (taken or renewed at ``t``, live until ``t + lease``) run out;
* a renewal, and every fenced write that changed the row (the re-try stamp, the key noted,
  the answer recorded), is by the claim's holder, lease run out or not (expiry only lets
  another take over);
* a call about a reversal goes out right after its sweeper renewed the claim, and only
  while that claim is the live one: a refund, void or refund question under a reversal's
  key without such a renewal is a violation too.

What a broken claim does is recorded in :attr:`StrayClaimWatch.violations`, as sentences,
for the model's check after the step.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from persistence.claims import Claim
from persistence.stray_store import StrayCandidate, StrayStore

# The claim a sweeper's task renewed last and has not called the provider under yet: each
# renewal licenses the one call that follows it (consumer.stray_charges._at_provider).
_renewed: ContextVar[tuple[str, str] | None] = ContextVar("stray_claim_renewed", default=None)

# consumer.stray_charges' reversal keys: "<attempt key>-reversal", "-reversal-<amount>",
# and the void's "<attempt key>-void-reversal".
REVERSAL = "-reversal"


@dataclass(frozen=True, slots=True)
class Holding:
    token: str
    expires_at: datetime


@dataclass
class StrayClaimWatch:
    clock: Callable[[], datetime]
    lease: timedelta
    violations: list[str] = field(default_factory=list)
    held: dict[str, Holding] = field(default_factory=dict)
    # What the races reached: claims taken over from a sweeper whose lease ran out, and
    # renewals or fenced writes the store refused (a zombie told it lost the claim).
    taken_over: int = 0
    refused: int = 0

    def took(self, attempt_key: str, claim: Claim | None, how: str) -> None:
        if claim is None:
            return
        now = self.clock()
        held = self.held.get(attempt_key)
        if held is not None and held.token != claim.token:
            if held.expires_at > now:
                self.violations.append(
                    f"stray charge {attempt_key}: its reversal's claim taken ({how}) at "
                    f"{now:%H:%M:%S} while another sweeper's ran until {held.expires_at:%H:%M:%S}"
                )
            self.taken_over += 1
        self.held[attempt_key] = Holding(claim.token, claim.expires_at)

    def renewed(self, attempt_key: str, token: str, renewed: bool) -> None:
        if not renewed:
            _renewed.set(None)
            self.refused += 1
            return
        self._by_the_holder(attempt_key, token, "its claim renewed")
        self.held[attempt_key] = Holding(token, self.clock() + self.lease)
        _renewed.set((attempt_key, token))

    def released(self, attempt_key: str, token: str) -> None:
        held = self.held.get(attempt_key)
        if held is not None and held.token == token:
            del self.held[attempt_key]

    def wrote(self, attempt_key: str, token: str, changed: bool, what: str) -> None:
        """A fenced write of the reversal's progress; ``what`` "recorded" releases."""
        if not changed:
            self.refused += 1
            return
        self._by_the_holder(attempt_key, token, what)
        if what == "recorded":
            self.released(attempt_key, token)

    def calling(self, what: str, key: str | None) -> None:
        """The provider's hook, at the start of each call (``key``: its idempotency key,
        the attempt's, the refund's or the void's, if it has one)."""
        renewed = _renewed.get()
        _renewed.set(None)
        if renewed is None:
            if key is not None and REVERSAL in key:
                self.violations.append(f"{what} {key} sent without the claim renewed first")
            return
        attempt_key, token = renewed
        held = self.held.get(attempt_key)
        if held is None or held.token != token or held.expires_at <= self.clock():
            self.violations.append(
                f"stray charge {attempt_key}: {what} sent by a sweeper whose claim is not live"
            )

    def _by_the_holder(self, attempt_key: str, token: str, what: str) -> None:
        held = self.held.get(attempt_key)
        if held is None or held.token != token:
            self.violations.append(
                f"stray charge {attempt_key}: {what} by a sweeper whose claim was "
                + ("given up" if held is None else "taken over")
            )


class WatchedStrayStore(StrayStore):
    """The real store, telling ``watch`` what its claim writes answered."""

    def __init__(self, *args: Any, watch: StrayClaimWatch, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watch = watch

    async def record_found(
        self, candidate: StrayCandidate, provider_reference: str
    ) -> Claim | None:
        claim = await super().record_found(candidate, provider_reference)
        self._watch.took(candidate.attempt_key, claim, "found")
        return claim

    async def claim_reversal(self, attempt_key: str) -> Claim | None:
        claim = await super().claim_reversal(attempt_key)
        self._watch.took(attempt_key, claim, "claimed")
        return claim

    async def renew_reversal(self, attempt_key: str, token: str) -> bool:
        renewed = await super().renew_reversal(attempt_key, token)
        self._watch.renewed(attempt_key, token, renewed)
        return renewed

    async def release_reversal(self, attempt_key: str, token: str) -> None:
        await super().release_reversal(attempt_key, token)
        self._watch.released(attempt_key, token)

    async def reverse_again_at(self, attempt_key: str, at: datetime, *, token: str) -> bool:
        changed = await super().reverse_again_at(attempt_key, at, token=token)
        self._watch.wrote(attempt_key, token, changed, "its re-try stamped")
        return changed

    async def note_reversal_key(
        self, attempt_key: str, reversal_key: str, *, replacing: str | None, token: str
    ) -> bool:
        changed = await super().note_reversal_key(
            attempt_key, reversal_key, replacing=replacing, token=token
        )
        self._watch.wrote(attempt_key, token, changed, "its reversal key noted")
        return changed

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
        changed = await super().record_reversal(
            attempt_key, status, reference, error, noted=noted, token=token
        )
        self._watch.wrote(attempt_key, token, changed, "recorded")
        return changed
