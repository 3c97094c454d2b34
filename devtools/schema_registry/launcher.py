"""Run Apicurio Registry 3.x locally: in-memory storage, bound to loopback, serving the
Confluent-compatible API under ``/apis/ccompat/v7``::

    with LocalSchemaRegistry() as registry:
        registry.confluent_url  # "http://127.0.0.1:<port>/apis/ccompat/v7"

Starting is synchronous and bounded: it returns once ``GET <confluent_url>/subjects``
answers 200, or raises :class:`RegistryLaunchError` with the tail of the log. Nothing
survives a stop: the storage is in memory, the work dir a temp dir.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from devtools.kafka.jars import tail
from devtools.schema_registry.distribution import (
    RegistryLaunchError,
    find_registry_java,
    resolve_distribution,
)

__all__ = ["LocalSchemaRegistry", "RegistryLaunchError"]

_HOST: Final = "127.0.0.1"
_POLL_INTERVAL_S: Final = 0.2
_STOP_TIMEOUT_S: Final = 20.0
_PORT_RACE_ATTEMPTS: Final = 3
# What Quarkus logs when a port it was given is taken by the time it binds.
_PORT_IN_USE: Final = "seems to be in use by another process"
CONFLUENT_PATH: Final = "/apis/ccompat/v7"


class LocalSchemaRegistry:
    """One Apicurio Registry process. Not thread-safe; stop() is safe to call twice."""

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        heap_mb: int = 384,
        startup_timeout_s: float = 180.0,
    ) -> None:
        self._cache_dir = cache_dir
        self._heap_mb = heap_mb
        self._startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._work_dir: Path | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, the registry's root."""
        if self._port is None:
            raise RegistryLaunchError("LocalSchemaRegistry is not started; call start() first")
        return f"http://{_HOST}:{self._port}"

    @property
    def confluent_url(self) -> str:
        """The Confluent-compatible API's base URL, what Schema Registry clients are given."""
        return self.url + CONFLUENT_PATH

    @property
    def log_path(self) -> Path | None:
        return None if self._work_dir is None else self._work_dir / "registry.log"

    def start(self) -> str:
        """Start, wait until the Confluent API answers, return :attr:`confluent_url`.

        The ports are chosen free, then bound by the JVM seconds later: another process can
        take one in between (a busy machine, parallel test runs). That failure is told by
        the registry's log and retried on new ports, a bounded number of times."""
        if self._proc is not None and self._proc.poll() is None:
            return self.confluent_url
        for attempt in range(1, _PORT_RACE_ATTEMPTS + 1):
            try:
                return self._start_once()
            except RegistryLaunchError as error:
                if attempt == _PORT_RACE_ATTEMPTS or _PORT_IN_USE not in str(error):
                    raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _start_once(self) -> str:
        java = find_registry_java()
        app = resolve_distribution(self._cache_dir)
        self._work_dir = Path(tempfile.mkdtemp(prefix="paygate-registry-"))
        self._port = _free_port()
        log_path = self._work_dir / "registry.log"
        cmd = [
            java,
            f"-Xmx{self._heap_mb}m",
            "-XX:TieredStopAtLevel=1",  # starts faster; a test registry serves little
            f"-Dquarkus.http.port={self._port}",
            f"-Dquarkus.http.host={_HOST}",
            # The management interface (health, metrics) listens on 9000 by default: two
            # registries on one machine (parallel test runs) would collide there.
            f"-Dquarkus.management.port={_free_port()}",
            f"-Dquarkus.management.host={_HOST}",
            "-Dquarkus.http.access-log.enabled=false",
            "-jar",
            str(app / "quarkus-run.jar"),
        ]
        with log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self._work_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(log_path)
        except BaseException:
            self.stop()
            raise
        return self.confluent_url

    def stop(self) -> None:
        """SIGTERM, up to 20 s, then SIGKILL; removes the work dir."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None
        self._port = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _port_or_fail(self) -> int:
        if self._port is None:
            raise RegistryLaunchError("LocalSchemaRegistry is not started; call start() first")
        return self._port

    def _wait_ready(self, log_path: Path) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self._startup_timeout_s
        while not _answers(self._port_or_fail(), CONFLUENT_PATH + "/subjects"):
            code = self._proc.poll()
            if code is not None or time.monotonic() >= deadline:
                what = f"exited with code {code}" if code is not None else "did not answer"
                text = log_path.read_text(errors="replace") if log_path.exists() else ""
                raise RegistryLaunchError(
                    f"Apicurio Registry {what} within {self._startup_timeout_s:.0f} s; "
                    f"last lines of {log_path}:\n{tail(text)}"
                )
            time.sleep(_POLL_INTERVAL_S)


def _answers(port: int, path: str) -> bool:
    connection = http.client.HTTPConnection(_HOST, port, timeout=2.0)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def _free_port() -> int:
    # Raced by other processes between close and the JVM's bind; a failed bind shows as an
    # early exit with the log's reason.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])
