"""Runs paygate's processes for end-to-end tests and stops them cleanly."""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from paygate.settings import Settings
from tests.support.child_env import child_environment


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen[str]
    log_path: Path
    announced: str = ""
    stopped: bool = field(default=False)

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.stopped:
            return self.process.returncode
        self.stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def environment_of(settings: Settings) -> dict[str, str]:
    """The environment variables that make a ``paygate`` process read ``settings``."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, dict | list):
            value = json.dumps(value, default=str)  # how pydantic-settings reads complex values
        key = (
            "KAFKA_BOOTSTRAP_SERVERS"
            if name == "kafka_bootstrap_servers"
            else f"PAYGATE_{name.upper()}"
        )
        env[key] = str(value)
    return env


def start_service(
    name: str,
    args: list[str],
    *,
    env: dict[str, str],
    log_dir: Path,
    announce_prefix: str | None = None,
    timeout_s: float = 60.0,
    module: str = "paygate.cli",
    cwd: Path | None = None,
) -> ServiceProcess:
    """Start ``paygate <args>``; with ``announce_prefix``, wait for that stdout line.

    ``module`` runs another entry point instead (``python -m <module> <args>``), such as
    ``providers.sandbox``, whose options ``paygate acquirer`` does not take (``--hang-s``).
    stderr (the JSON logs) goes to a file, so tests can read everything a process logged.
    ``env`` is laid over this process's environment by :func:`child_environment`: a port
    setting it does not give is 0, and one it leaves on its default fails the test.
    """
    log_path = log_dir / f"{name}.log"
    log_file = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        env=child_environment(env),
        stdout=subprocess.PIPE,
        stderr=log_file,
        text=True,
        cwd=cwd,
    )
    service = ServiceProcess(name, process, log_path)
    if announce_prefix is None:
        return service
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if selector.select(timeout=0.2):
            line = process.stdout.readline()
            if line.startswith(announce_prefix):
                service.announced = line.strip().split("=", 1)[1]
                return service
    service.stop()
    raise AssertionError(
        f"{name} did not announce {announce_prefix!r} within {timeout_s}s:\n{service.log()[-3000:]}"
    )
