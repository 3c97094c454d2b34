"""One log line per change in a dependency's availability, not one per failed call.

When the database or Kafka goes away, every request that needs it fails the same way;
a line (or a traceback) per request buries the one fact an operator needs. An
:class:`OutageLog` turns the stream of "this call failed / this call worked" reports
about one dependency into:

- ``"<dependency> unreachable"`` at ERROR, once, when the first call fails;
- while it stays down, at most one WARNING summary per ``summary_every_s``, counting the
  calls that failed since the last line (written when a failure is reported, so a
  dependency nobody calls writes nothing);
- ``"<dependency> reachable again"`` at INFO, once, with the outage's duration and its
  failed calls, when a call works again.

Only exception *type names* are logged, never ``str(exc)``: a database error's text can
carry the SQL statement and its parameters (an API key's digest, an order id).

Not thread-safe: one instance is driven from one event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

DEFAULT_SUMMARY_EVERY_S: Final = 60.0


class OutageLog:
    def __init__(
        self,
        dependency: str,
        logger: logging.Logger,
        *,
        summary_every_s: float = DEFAULT_SUMMARY_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not summary_every_s > 0:
            raise ValueError(f"summary_every_s must be positive, got {summary_every_s!r}")
        self._dependency = dependency
        self._log = logger
        self._summary_every_s = summary_every_s
        self._clock = clock
        self._down_since: float | None = None
        self._failures = 0  # calls failed since the outage began
        self._last_line_at = 0.0
        self._failures_at_last_line = 0

    @property
    def is_down(self) -> bool:
        return self._down_since is not None

    def failed(self, exc: BaseException, *, with_traceback: bool = False) -> None:
        """A call to the dependency failed because it is unreachable.

        ``with_traceback`` puts the traceback on the first line of the outage (for a
        failure nobody knows the cause of yet); the later lines never carry one.
        """
        now = self._clock()
        self._failures += 1
        if self._down_since is None:
            self._down_since = self._last_line_at = now
            self._failures_at_last_line = 1
            self._log.error(
                "%s unreachable",
                self._dependency,
                exc_info=exc if with_traceback else None,
                extra={"dependency": self._dependency, "error_type": error_types(exc)},
            )
            return
        if now - self._last_line_at >= self._summary_every_s:
            self._log.warning(
                "%s still unreachable: %d calls failed in the last %.0f s",
                self._dependency,
                self._failures - self._failures_at_last_line,
                now - self._last_line_at,
                extra={
                    "dependency": self._dependency,
                    "error_type": error_types(exc),
                    "down_for_s": round(now - self._down_since, 3),
                    "failed_calls": self._failures,
                },
            )
            self._last_line_at = now
            self._failures_at_last_line = self._failures

    def succeeded(self) -> None:
        """A call to the dependency worked; cheap when it was not down."""
        if self._down_since is None:
            return
        down_for_s = self._clock() - self._down_since
        self._log.info(
            "%s reachable again after %.1f s",
            self._dependency,
            down_for_s,
            extra={
                "dependency": self._dependency,
                "down_for_s": round(down_for_s, 3),
                "failed_calls": self._failures,
            },
        )
        self._down_since = None
        self._failures = 0


class DependencyOutages:
    """An :class:`OutageLog` per dependency, for a loop whose calls reach several.

    ``name_of`` names the dependency an error says is unreachable; None means the error is
    not known to be an outage, and it is logged under ``fallback``, its first line with its
    traceback. A call that works ends every outage this instance has open: the loops that
    use it (the consumer's handling, the outbox relay) need all their dependencies for a
    call to work.
    """

    def __init__(
        self,
        logger: logging.Logger,
        name_of: Callable[[BaseException], str | None],
        *,
        fallback: str,
        summary_every_s: float = DEFAULT_SUMMARY_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._name_of = name_of
        self._fallback = fallback
        self._summary_every_s = summary_every_s
        self._clock = clock
        self._outages: dict[str, OutageLog] = {}

    def failed(self, exc: BaseException) -> None:
        name = self._name_of(exc)
        self._of(name or self._fallback).failed(exc, with_traceback=name is None)

    def succeeded(self) -> None:
        for outage in self._outages.values():
            outage.succeeded()

    @property
    def down(self) -> list[str]:
        """The dependencies whose outage is open."""
        return [name for name, outage in self._outages.items() if outage.is_down]

    def _of(self, name: str) -> OutageLog:
        outage = self._outages.get(name)
        if outage is None:
            outage = self._outages[name] = OutageLog(
                name, self._log, summary_every_s=self._summary_every_s, clock=self._clock
            )
        return outage


def error_types(exc: BaseException) -> str:
    """The exception's type and those of its causes, outermost first:
    ``"OperationalError <- ConnectionRefusedError"``; never the messages."""
    names: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(names) < 5:
        seen.add(id(current))
        names.append(type(current).__name__)
        current = current.__cause__ or current.__context__
    return " <- ".join(names)
