"""The consumers of a chaos run: a fixed number of processes in one consumer group.

Kills replace a consumer at once; a consumer that exits by itself (a crash) is replaced
after a short delay, as a supervisor (systemd, Kubernetes) would, and recorded. A consumer
can also be frozen (SIGSTOP) and thawed (SIGCONT): it is not replaced meanwhile, since a
supervisor sees a frozen process as alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from devtools.chaos.harness import ChaosSetupError, Child, spawn

log = logging.getLogger("devtools.chaos")

_READY_POLL_S = 0.2
_CONSUMER_READY_LINE = '"msg":"consumer started"'
# Not at once: when the broker is down, a tight restart loop would only burn CPU.
_REVIVE_DELAY_S = 1.0


@dataclass(frozen=True, slots=True)
class Crash:
    """A consumer that exited without being told to."""

    name: str
    returncode: int
    log_tail: str

    @property
    def reason(self) -> str:
        """The exception that ended it: the last line of its log that is not JSON (the
        traceback's last line), else the last line."""
        lines = [line.strip() for line in self.log_tail.splitlines() if line.strip()]
        plain = [line for line in lines if not line.startswith("{")]
        return (plain or lines or ["(empty log)"])[-1]

    def __str__(self) -> str:
        return f"{self.name} exited {self.returncode}: {self.reason}"


@dataclass
class _Slot:
    child: Child
    revive_at: float | None = None  # set when the child crashed


@dataclass
class ConsumerPool:
    """``size`` consumer processes in one group; kills and crashes are replaced."""

    env: dict[str, str]
    log_dir: Path
    size: int
    kills: int = 0
    restarts: int = 0
    crashes: list[Crash] = field(default_factory=list)
    exit_codes: dict[str, int] = field(default_factory=dict)
    _slots: list[_Slot] = field(default_factory=list)
    _started: int = 0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _stopped: bool = False

    async def start(self, *, ready_timeout_s: float = 90.0) -> None:
        """Start the consumers and wait (bounded) until each has joined Kafka."""
        async with self._lock:
            for _ in range(self.size):
                self._slots.append(_Slot(await self._spawn()))
        deadline = time.monotonic() + ready_timeout_s
        for slot in self._slots:
            await _wait_ready(slot.child, deadline)

    async def kill_one(self, rng: random.Random) -> None:
        """SIGKILL a consumer picked by ``rng`` and start a new one in its place."""
        async with self._lock:
            if self._stopped:
                return
            slot = self._slots[rng.randrange(len(self._slots))]
            victim = slot.child
            if victim.returncode is not None:
                return  # it crashed on its own; revive_crashed() replaces it
            await victim.kill()
            if victim.returncode == -signal.SIGKILL:
                self.kills += 1
                what = "SIGKILLed"
            else:
                # It had exited on its own just before (not yet reaped): not our kill.
                self.crashes.append(Crash(victim.name, victim.returncode or 0, victim.log_tail()))
                what = f"found crashed (exit {victim.returncode})"
            slot.child = await self._spawn()
            self.restarts += 1
            log.info("%s %s; started %s", what, victim, slot.child)

    def running(self) -> list[Child]:
        """The consumers alive and not frozen."""
        return [
            slot.child
            for slot in self._slots
            if slot.child.returncode is None and not slot.child.paused
        ]

    async def freeze(self, victim: Child) -> bool:
        """SIGSTOP ``victim`` if it still runs; False if it does not (or the pool stopped)."""
        async with self._lock:
            if self._stopped or all(victim is not child for child in self.running()):
                return False
            victim.pause()
            log.info("SIGSTOPped %s", victim)
            return True

    async def thaw(self, victim: Child) -> None:
        """SIGCONT a frozen ``victim``."""
        async with self._lock:
            victim.resume()
            log.info("SIGCONTed %s", victim)

    async def revive_crashed(self) -> None:
        """Replace consumers that exited on their own, after a short delay."""
        async with self._lock:
            if self._stopped:
                return
            now = time.monotonic()
            for slot in self._slots:
                child = slot.child
                if child.returncode is None or child.killed:
                    continue
                if slot.revive_at is None:
                    self.crashes.append(Crash(child.name, child.returncode, child.log_tail()))
                    log.warning("%s exited by itself with code %s", child, child.returncode)
                    slot.revive_at = now + _REVIVE_DELAY_S
                elif now >= slot.revive_at:
                    slot.child = await self._spawn()
                    slot.revive_at = None
                    self.restarts += 1
                    log.info("started %s in place of crashed %s", slot.child, child.name)

    async def stop_all(self) -> dict[str, int]:
        """SIGTERM every consumer at once; exit codes by name. Safe to call twice."""
        async with self._lock:
            if not self._stopped:
                self._stopped = True
                running = [s.child for s in self._slots if s.child.returncode is None]
                # A consumer started by a late kill may still be importing: SIGTERM then
                # ends it before it can handle the signal, which says nothing about its
                # shutdown. The check is about running consumers: let each reach "started".
                deadline = time.monotonic() + _STOP_READY_TIMEOUT_S
                for child in running:
                    with contextlib.suppress(ChaosSetupError):
                        await _wait_ready(child, deadline)
                codes = await asyncio.gather(*(child.terminate() for child in running))
                self.exit_codes = {c.name: code for c, code in zip(running, codes, strict=True)}
            return self.exit_codes

    @property
    def names(self) -> list[str]:
        return [slot.child.name for slot in self._slots]

    async def _spawn(self) -> Child:
        self._started += 1
        name = f"consumer-{self._started:02d}"
        return await spawn(
            name,
            ["-m", "paygate.cli", "consumer"],
            env=self.env,
            log_path=self.log_dir / f"{name}.log",
        )


# How long stop_all waits for a consumer still starting to be ready before it stops it.
_STOP_READY_TIMEOUT_S = 60.0


async def _wait_ready(child: Child, deadline: float) -> None:
    while True:
        if _CONSUMER_READY_LINE in child.log_path.read_text(errors="replace"):
            return
        if child.returncode is not None:
            raise ChaosSetupError(f"{child} exited during start-up:\n{child.log_tail()}")
        if time.monotonic() > deadline:
            raise ChaosSetupError(f"{child} did not start in time:\n{child.log_tail()}")
        await asyncio.sleep(_READY_POLL_S)
