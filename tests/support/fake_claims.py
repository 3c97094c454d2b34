"""A row's claim (persistence.claims) in memory, for the fake stores.

The same invariant as the SQL stores, by the same pure rules (``is_claimable``,
``new_claim``): a claim is *taken* only when the row has no token or its token has expired,
with a fresh token; every later write of the holder names its token, and once the row's
token is another's (a takeover) that write changes nothing and says so.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from persistence.claims import Claim, is_claimable, new_claim


@dataclass
class ClaimSlot:
    """The ``(claim_token, claim_expires_at)`` columns of one row."""

    token: str | None = None
    expires_at: datetime | None = None

    def take(self, now: datetime, lease: timedelta) -> Claim | None:
        """The conditional write: a fresh token only if the claim is free or expired."""
        if not is_claimable(self.token, self.expires_at, now):
            return None
        claim = new_claim(now, lease)
        self.hold(claim)
        return claim

    def hold(self, claim: Claim) -> None:
        """Set by the insert or move that makes the row (begin): nobody held it before."""
        self.token, self.expires_at = claim.token, claim.expires_at

    def held_by(self, token: str) -> bool:
        return self.token is not None and self.token == token

    def renew(self, token: str, expires_at: datetime) -> bool:
        if not self.held_by(token):
            return False
        self.expires_at = expires_at
        return True

    def release(self, token: str) -> None:
        """A no-op unless ``token`` is the row's, like ``release_claim``."""
        if self.held_by(token):
            self.clear()

    def clear(self) -> None:
        self.token = self.expires_at = None

    def take_over(self, now: datetime, lease: timedelta) -> str:
        """Another worker's claim, as after the holder's lease ran out: from now on the
        holder's writes match nothing."""
        self.token, self.expires_at = f"another-worker-{uuid.uuid4().hex[:8]}", now + lease
        return self.token
