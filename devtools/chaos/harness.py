"""Child processes of a chaos run: how they are started, signalled and stopped.

Every child runs in a session of its own, so a Ctrl-C in the terminal reaches only the
harness, which then stops the children in order (consumers get SIGTERM and must exit 0).
Each child writes stdout and stderr to its own log file in the work dir: when a check
fails, those files are the evidence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from devtools.chaos.options import ChaosOptions
from paygate.settings import Settings

log = logging.getLogger("devtools.chaos")

_STOP_TIMEOUT_S = 30.0


class ChaosSetupError(RuntimeError):
    """A part of the run could not be started; nothing was measured."""


def child_environment(settings: Settings) -> dict[str, str]:
    """This process's environment with ``settings`` as the only paygate settings.

    Inherited ``PAYGATE_*`` variables are dropped so that a child never mixes the chaos
    run's settings with a developer's shell settings.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PAYGATE_") and key != "KAFKA_BOOTSTRAP_SERVERS"
    }
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, dict | list):
            text = json.dumps(value, default=str)  # how pydantic-settings reads complex values
        else:
            text = str(value)
        if name == "kafka_bootstrap_servers":
            env["KAFKA_BOOTSTRAP_SERVERS"] = text
        else:
            env[f"PAYGATE_{name.upper()}"] = text
    return env


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    killed: bool = False  # SIGKILLed by the harness, on purpose
    paused: bool = False  # SIGSTOPped by the harness and not SIGCONTed yet

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    async def kill(self) -> None:
        """SIGKILL, as a crash of the machine or an OOM kill would end it."""
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: the process freezes where it is, connections open and timers running
        out, as a long GC pause, a frozen VM or a throttled container leaves a process."""
        self.paused = True
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: it carries on from where it froze, unaware of the time gone by."""
        if self.paused:
            self.paused = False
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)

    async def terminate(self, timeout_s: float = _STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait (bounded); SIGKILL if it does not stop. Safe to call twice."""
        self.resume()  # a stopped process would keep SIGTERM pending until the bound
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout_s)
            except TimeoutError:
                log.error("%s did not stop within %.0f s of SIGTERM: killing it", self, timeout_s)
                await self.kill()
        return self.process.returncode if self.process.returncode is not None else -1

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __str__(self) -> str:
        return f"{self.name} (pid {self.pid})"


async def spawn(
    name: str, args: list[str], *, env: dict[str, str], log_path: Path, pipe_stdout: bool = False
) -> Child:
    """Start ``python <args>`` with its output in ``log_path`` (stdout piped if asked)."""
    with log_path.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if pipe_stdout else log_file,
            stderr=log_file,
            start_new_session=True,
        )
    return Child(name, process, log_path)


async def start_acquirer(
    options: ChaosOptions, work_dir: Path, *, timeout_s: float = 60.0
) -> tuple[Child, str]:
    """The sandbox acquirer with its fault injection; returns it and its base URL.

    ``python -m providers.sandbox`` rather than ``paygate acquirer``: only the former takes
    the fault-injection flags.
    """
    args = [
        "-m",
        "providers.sandbox",
        "--port",
        "0",
        "--ledger",
        str(work_dir / "ledger.db"),
        "--failure-rate",
        str(options.failure_rate),
        "--timeout-rate",
        str(options.timeout_rate),
        "--hang-s",
        str(options.hang_s),
        "--account-latency-s",
        str(options.account_latency_s),
        "--action-ttl-s",
        str(options.action_ttl_s),
        "--authorization-hold-s",
        str(options.authorization_hold_s),
        "--seed",
        str(options.seed),
    ]
    child = await spawn(
        "acquirer", args, env=dict(os.environ), log_path=work_dir / "acquirer.log", pipe_stdout=True
    )
    try:
        url = await asyncio.wait_for(_announced(child, "SANDBOX_URL="), timeout_s)
    except BaseException:
        await child.terminate()
        raise
    return child, url


async def _announced(child: Child, prefix: str) -> str:
    stdout = child.process.stdout
    assert stdout is not None
    while line := (await stdout.readline()).decode(errors="replace"):
        if line.startswith(prefix):
            return line.strip().split("=", 1)[1]
    raise ChaosSetupError(f"{child} exited before printing {prefix!r}:\n{child.log_tail()}")
