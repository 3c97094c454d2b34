"""A circuit breaker around any payment provider: a provider that is down is not called.

:class:`CircuitBreakerProvider` implements the provider port around another provider.
Without it, every payment in flight keeps calling a provider that is down (and, with a
provider that drops packets, waits out a connect timeout each time); with it, calls fail
fast, a route's next provider is tried at once, and the provider sees one probe call per
open period instead of a retry storm when it comes back. States, with the values the
``paygate_provider_circuit_state`` gauge shows::

    CLOSED (0) ----- failure_threshold calls in a row certainly did not charge -----> OPEN (2)
    OPEN ----------- open_s later, the next call goes through as the probe -----> HALF_OPEN (1)
    HALF_OPEN ------ the probe got an answer --------------------------------------> CLOSED
    HALF_OPEN ------ the probe did not (not charged, or outcome unknown) ----------> OPEN
    HALF_OPEN ------ the probe ended another way (cancelled): the next call probes

What a call's result says about the provider:

- **failure**: a ``retriable`` error that is not ``outcome_unknown`` (refused connection,
  503, 429): the provider certainly did not charge, and is not serving.
- **answer** (resets the count): an outcome, a :class:`domain.errors.PaygateError` (a
  refusal, a conflict) or a non-retriable provider error (a rejected request, refused
  credentials): the provider is up.
- **neither**: an ``outcome_unknown`` error (a timeout). It is passed on unchanged, never
  read as "not charged", and does not count towards opening (a slow provider is not a down
  one); only as the probe's result does it re-open the circuit, since it did not show the
  provider healthy.

A result counts only in the state its call was let through in: calls still out when the
circuit opened do not extend or close it.

Guarded are the calls that move money: ``charge``, ``capture``, ``cancel``, ``refund``.
While the circuit is open they raise :class:`CircuitOpenError` without calling the provider: a
``provider_unavailable`` error, retriable and certainly not charged (nothing was sent),
whose ``retry_after`` is the time left open (None while half-open: the back-off decides).

Passed through, always, and never counted: ``charge_status``, ``charge_by_reference`` and
``refund_status``. They resolve in-doubt payments and refunds, so blocking them would only
keep those pending longer, and they move no money; a reconciler asking a down provider
every few seconds must not hold the circuit open, nor one answer close it for charges.

Asyncio, one event loop: every state change happens between awaits, so no lock is needed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from enum import IntEnum
from typing import Protocol, TypeVar

from domain.errors import PaygateError
from providers.delegating import DelegatingProvider
from providers.errors import ProviderError, ProviderUnavailableError
from providers.port import PaymentProvider

log = logging.getLogger("paygate.providers")

_T = TypeVar("_T")


class CircuitState(IntEnum):
    """The values are what the state gauge shows: higher is worse."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class CircuitObserver(Protocol):
    """Told of every change of state (metrics). ``before`` is None once, for the initial
    state, when the breaker is made."""

    def circuit_changed(
        self, provider: str, before: CircuitState | None, after: CircuitState
    ) -> None: ...


class CircuitOpenError(ProviderUnavailableError):
    """Failed fast, without calling the provider: certainly not charged."""


class CircuitBreakerProvider(DelegatingProvider):
    """``inner`` behind the breaker: the calls that move money are guarded; the others
    (status queries, ``close_charge``: it ends a wait and charges nothing) are passed
    through, never refused and never counted."""

    def __init__(
        self,
        inner: PaymentProvider,
        *,
        failure_threshold: int = 5,
        open_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        observer: CircuitObserver | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if not 0 < open_s < math.inf:
            raise ValueError("open_s must be positive and finite")
        super().__init__(inner)
        self._threshold = failure_threshold
        self._open_s = open_s
        self._clock = clock
        self._observer = observer
        self._state = CircuitState.CLOSED
        self._failures = 0  # in a row, while closed
        self._last_failure = ""
        self._opened_at = 0.0
        self._probing = False  # half-open: the probe call is out
        # Bumped at every change of state; a call's result counts only if it is unchanged.
        self._epoch = 0
        if observer is not None:
            observer.circuit_changed(inner.name, None, self._state)

    @property
    def state(self) -> CircuitState:
        """The state as of the last call; an open circuit turns half-open only when a call
        comes after its open period."""
        return self._state

    async def _moving_money(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """The guard: admitted or refused by the state, and the result counted."""
        epoch = self._admit()
        try:
            result = await call()
        except ProviderError as exc:
            if exc.outcome_unknown:
                self._unknown(epoch, exc.message)
            elif exc.retriable:
                self._failed(epoch, exc.message)
            else:
                self._answered(epoch)
            raise
        except PaygateError:
            self._answered(epoch)
            raise
        except BaseException:
            self._abandoned(epoch)
            raise
        self._answered(epoch)
        return result

    def _admit(self) -> int:
        """Let the call through (returning the epoch it runs in) or raise CircuitOpenError."""
        if self._state is CircuitState.OPEN:
            left = self._opened_at + self._open_s - self._clock()
            if left > 0:
                raise CircuitOpenError(
                    self.name,
                    f"circuit open (last failure: {self._last_failure}); not called, "
                    f"{left:.1f} s left open",
                    retry_after=left,
                )
            self._move(CircuitState.HALF_OPEN)
        if self._state is CircuitState.HALF_OPEN:
            if self._probing:
                raise CircuitOpenError(
                    self.name, "circuit half-open: a probe call is out; not called"
                )
            self._probing = True
        return self._epoch

    def _failed(self, epoch: int, message: str) -> None:
        if epoch != self._epoch:
            return
        self._last_failure = message
        if self._state is CircuitState.HALF_OPEN:
            self._move(CircuitState.OPEN)
            return
        self._failures += 1
        if self._failures >= self._threshold:
            self._move(CircuitState.OPEN)

    def _answered(self, epoch: int) -> None:
        if epoch != self._epoch:
            return
        if self._state is CircuitState.HALF_OPEN:
            self._move(CircuitState.CLOSED)
        self._failures = 0

    def _unknown(self, epoch: int, message: str) -> None:
        if epoch == self._epoch and self._state is CircuitState.HALF_OPEN:
            self._last_failure = f"the probe got no answer: {message}"
            self._move(CircuitState.OPEN)

    def _abandoned(self, epoch: int) -> None:
        # Cancelled (a shutdown) or a bug: says nothing about the provider, but a probe
        # that will never report must not keep the circuit half-open and shut for good.
        if epoch == self._epoch and self._state is CircuitState.HALF_OPEN:
            self._probing = False

    def _move(self, after: CircuitState) -> None:
        before, self._state = self._state, after
        self._epoch += 1
        self._probing = False
        self._failures = 0
        if after is CircuitState.OPEN:
            self._opened_at = self._clock()
            log.warning(
                "circuit of provider %s open for %.1f s: %s",
                self.name,
                self._open_s,
                self._last_failure,
                extra={"provider": self.name, "circuit": after.label},
            )
        else:
            log.info(
                "circuit of provider %s %s",
                self.name,
                after.label,
                extra={"provider": self.name, "circuit": after.label},
            )
        if self._observer is not None:
            self._observer.circuit_changed(self.name, before, after)
