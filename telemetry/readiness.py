"""Readiness: the named checks ``GET /readyz`` runs to say whether a process can do its work.

Liveness (``/healthz``) only says the process answers; readiness says its parts work, so
an orchestrator can take an instance out of rotation (or hold a rollout) without
restarting it. Each part registers one check under a stable name (``database``,
``kafka``, ``result_listener``, ``consumer_assignment``, ``outbox_relay``); the names
appear in the ``/readyz`` body. The facade serves it on its HTTPS port and its ops port,
the consumer on its ops port (paygate.ops_server).

Invariants: the report names every registered check, each ``True`` only if it answered
``True`` within ``timeout_s``; a check that raises or hangs counts as failing, never
propagated, so a probe always gets an answer in about ``timeout_s``. A check's failures
are logged when it starts failing and when it passes again, not at every probe: probes
come every few seconds for as long as an outage lasts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

log = logging.getLogger("paygate.readiness")


class ReadinessCheck(Protocol):
    async def __call__(self) -> bool:
        """Whether the part this check watches is usable now; cheap, called per probe."""
        ...


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    checks: Mapping[str, bool]

    @property
    def ready(self) -> bool:
        return all(self.checks.values())

    @property
    def failing(self) -> list[str]:
        return [name for name, ok in self.checks.items() if not ok]

    def body(self) -> dict[str, Any]:
        """The ``/readyz`` JSON body: the overall status and each check's."""
        return {
            "status": "ready" if self.ready else "not_ready",
            "checks": {name: "ok" if ok else "failing" for name, ok in self.checks.items()},
        }

    @property
    def http_status(self) -> int:
        return 200 if self.ready else 503


class Readiness:
    """A registry of named checks; with none registered, the process is ready."""

    def __init__(self, *, timeout_s: float = 2.0) -> None:
        self._timeout_s = timeout_s
        self._checks: dict[str, ReadinessCheck] = {}
        self._failing: set[str] = set()

    def add(self, name: str, check: ReadinessCheck) -> None:
        if name in self._checks:
            raise ValueError(f"a readiness check named {name!r} is already registered")
        self._checks[name] = check

    async def report(self) -> ReadinessReport:
        names = list(self._checks)
        results = await asyncio.gather(*(self._run(name) for name in names))
        return ReadinessReport(MappingProxyType(dict(zip(names, results, strict=True))))

    async def _run(self, name: str) -> bool:
        why = "answered not ready"
        try:
            async with asyncio.timeout(self._timeout_s):
                if await self._checks[name]():
                    self._passed(name)
                    return True
        except TimeoutError:
            why = "did not answer in time"
        except Exception as exc:
            why = f"failed: {type(exc).__name__}"
        self._failed(name, why)
        return False

    def _failed(self, name: str, why: str) -> None:
        if name in self._failing:
            return
        self._failing.add(name)
        log.warning("readiness check %s %s", name, why, extra={"check": name})

    def _passed(self, name: str) -> None:
        if name not in self._failing:
            return
        self._failing.discard(name)
        log.info("readiness check %s passes again", name, extra={"check": name})
