"""The sandbox acquirer as a process the run takes down and brings back.

It comes back on the same port with the same ledger file, as a restarted service would:
the consumer's settings keep pointing at it, and the ledger keeps every charge made before
the outage, so double charges across it are counted.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from yarl import URL

from devtools.chaos.harness import ChaosSetupError, Child, spawn

_ANNOUNCE = "SANDBOX_URL="


@dataclass
class Acquirer:
    ledger: Path
    log_path: Path
    port: int = 0  # 0 until the first start picked one
    url: str = ""
    _child: Child | None = None

    async def start(self, *, timeout_s: float = 60.0) -> str:
        """Start it (on the port it had, if it ran before); returns its base URL."""
        args = ["-m", "providers.sandbox", "--port", str(self.port), "--ledger", str(self.ledger)]
        child = await spawn(
            "acquirer", args, env=dict(os.environ), log_path=self.log_path, pipe_stdout=True
        )
        try:
            url = await asyncio.wait_for(_announced(child), timeout_s)
        except BaseException:
            await child.terminate()
            raise
        self._child, self.url = child, url
        self.port = URL(url).port or 0
        return url

    async def take_down(self, how: str) -> None:
        """``kill``: SIGKILL, as a crash would (calls in flight are cut, in doubt);
        ``term``: SIGTERM, calls in flight finish first."""
        if self._child is None:
            return
        if how == "kill":
            await self._child.kill()
        else:
            await self._child.terminate()

    async def stop(self) -> None:
        """Safe to call twice, and when it is down."""
        if self._child is not None:
            await self._child.terminate()


async def _announced(child: Child) -> str:
    stdout = child.process.stdout
    assert stdout is not None
    while line := (await stdout.readline()).decode(errors="replace"):
        if line.startswith(_ANNOUNCE):
            return line.strip().split("=", 1)[1]
    raise ChaosSetupError(f"{child} exited before printing {_ANNOUNCE!r}:\n{child.log_tail()}")
