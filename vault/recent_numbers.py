"""Clear numbers the consumer's intake just had, held for the provider call that follows.

The consumer's intake vaults a command's clear numbers (or decrypts a token's, to check it
opens) and, milliseconds later, its provider call needs them back: reading each row again
and decrypting it was about 9 % of the pipeline's CPU (docs/performance.md).
:class:`vault.vault.Vault` keeps them here instead and, at the call, only asks the database
whether each token is still live.

Invariants:

- Only numbers this process's intake had in clear anyway: what its own
  :meth:`Vault.tokenize` encrypted (put after its row was committed) or
  :meth:`Vault.tokenize_along` encrypted (put before its row commits in the payment's
  begin: a token whose transaction failed is never live, so its number is never handed
  out, see the last point), and what
  :meth:`Vault.check_opens` decrypted (and authenticated) to check a token opens. A row
  altered in the database after that cannot change what is held.
- Bounded in count: at most ``capacity`` numbers; the oldest is dropped to make room.
- Bounded in time: a number is held at most ``hold_s`` seconds after it was put. A stale one
  is never handed out (``take`` checks), and a timer drops the stale ones even when no
  further payment comes, so an idle process holds none ``hold_s`` after its last intake.
- Taken once: :meth:`take` removes the number. A second reveal of the token (a retry, a
  re-send, a takeover by another process) reads the vault as before.
- Never the only check: a held number is handed out only for a token the database still
  holds, in the same client's scope, and not expired (``Vault.reveal``). A number missing
  here (dropped, another process's, a restart) costs only the full read.

Held values are plain ``str`` objects: Python cannot wipe them, so "dropped" means "no
reference left", the same as the clear number a reveal returns after the call.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from domain.accounts import Account

DEFAULT_HOLD_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class HeldNumber:
    """A clear number as :meth:`Vault.tokenize` wrote it, with its row's scope and expiry."""

    client_id: str | None
    account: Account = field(repr=False)
    expires_at: datetime | None
    until: float  # monotonic deadline: never handed out after it


class RecentNumbers:
    def __init__(
        self,
        *,
        capacity: int,
        hold_s: float = DEFAULT_HOLD_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1 or hold_s <= 0:
            raise ValueError("capacity and hold_s must be positive")
        self._capacity = capacity
        self._hold_s = hold_s
        self._monotonic = monotonic
        # Insertion order is age order: every number is held for the same hold_s.
        self._held: OrderedDict[str, HeldNumber] = OrderedDict()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return len(self._held)

    def put(
        self, token: str, account: Account, *, client_id: str | None, expires_at: datetime | None
    ) -> None:
        """Hold ``account``'s number for ``token``, whose row is committed or being
        committed: :meth:`take`'s caller hands it out only for a token found live."""
        # Put again (a token two commands name), it moves to the young end: assignment
        # alone keeps an OrderedDict key in place, and a young entry at the head would stop
        # drop_stale and the timer at it, keeping the stale numbers behind it past hold_s.
        self._held.pop(token, None)
        self._held[token] = HeldNumber(
            client_id, account, expires_at, self._monotonic() + self._hold_s
        )
        while len(self._held) > self._capacity:
            self._held.popitem(last=False)
        loop = asyncio.get_running_loop()
        # A timer of a loop that has ended (tests run several) never fires: start another.
        if self._timer is None or self._timer_loop is not loop:
            self._timer, self._timer_loop = loop.call_later(self._hold_s, self._on_timer), loop

    def take(self, token: str, client_id: str | None) -> HeldNumber | None:
        """The number held for ``token`` in ``client_id``'s scope, removed; None if none is
        held, it is stale, or it was another client's (then it is dropped all the same)."""
        held = self._held.pop(token, None)
        if held is None or held.until <= self._monotonic() or held.client_id != client_id:
            return None
        return held

    def drop_stale(self) -> None:
        """Drop every number held for ``hold_s`` or longer."""
        now = self._monotonic()
        while self._held:
            oldest = next(iter(self._held.values()))
            if oldest.until > now:
                return
            self._held.popitem(last=False)

    def clear(self) -> None:
        """Drop everything (the owner stops)."""
        self._held.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_loop = None

    def _on_timer(self) -> None:
        self._timer = self._timer_loop = None
        self.drop_stale()
        if self._held:
            oldest = next(iter(self._held.values()))
            delay = max(oldest.until - self._monotonic(), 0.0)
            loop = asyncio.get_running_loop()
            self._timer, self._timer_loop = loop.call_later(delay, self._on_timer), loop
