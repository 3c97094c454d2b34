"""Readiness: the named checks ``GET /readyz`` runs to say whether the facade can serve.

Liveness (``/healthz``) only says the process answers; readiness says its parts work, so
an orchestrator can take an instance out of rotation without restarting it. Each part
registers one check under a stable name (``result_listener``; the database and Kafka can
follow); the names appear in the ``/readyz`` body.

Invariants: the report names every registered check, each ``True`` only if it answered
``True`` within ``timeout_s``; a check that raises or hangs counts as failing (logged,
never propagated), so a probe always gets an answer in about ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

log = logging.getLogger("paygate.http.readiness")


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


class Readiness:
    """A registry of named checks; with none registered, the facade is ready."""

    def __init__(self, *, timeout_s: float = 2.0) -> None:
        self._timeout_s = timeout_s
        self._checks: dict[str, ReadinessCheck] = {}

    def add(self, name: str, check: ReadinessCheck) -> None:
        if name in self._checks:
            raise ValueError(f"a readiness check named {name!r} is already registered")
        self._checks[name] = check

    async def report(self) -> ReadinessReport:
        names = list(self._checks)
        results = await asyncio.gather(*(self._run(name) for name in names))
        return ReadinessReport(MappingProxyType(dict(zip(names, results, strict=True))))

    async def _run(self, name: str) -> bool:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._checks[name]()
        except TimeoutError:
            log.warning("readiness check %s did not answer in time", name, extra={"check": name})
        except Exception as exc:
            log.warning(
                "readiness check %s failed: %s",
                name,
                type(exc).__name__,
                extra={"check": name},
            )
        return False
