"""Start a real single-node Apache Kafka 4.x broker (KRaft) for development and tests.

:class:`LocalKafka` runs ``kafka.Kafka`` from the jars that :mod:`devtools.kafka.jars`
resolves, as one JVM acting as both broker and controller, bound to loopback only::

    with LocalKafka() as kafka:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
        ...

Layout of the work dir (a fresh temp dir unless one is given)::

    server.properties   written on every start
    server.log          the broker's stdout/stderr (Log4j console appender), appended to
    data/               log.dirs (and the KRaft metadata log); formatted once

Starting is synchronous and bounded: it returns once the log says "Kafka Server started"
and the PLAINTEXT port accepts a TCP connection, or raises :class:`KafkaLaunchError` with
the tail of the log. Free ports are chosen by binding port 0 and closing the socket,
which races with other processes; when the broker then fails with "Address already in
use" the launch is retried with new ports.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Self

from devtools.kafka import secure_listeners
from devtools.kafka.jars import KafkaLaunchError, find_java, resolve_classpath, tail
from devtools.kafka.secure_listeners import SecureListeners

__all__ = ["KafkaLaunchError", "LocalKafka"]

_STARTED_LINE = "Kafka Server started"
_ADDRESS_IN_USE = "Address already in use"
_POLL_INTERVAL_S = 0.2
_STOP_TIMEOUT_S = 20.0
_KILL_WAIT_S = 10.0
_FORMAT_TIMEOUT_S = 120.0
_LAUNCH_ATTEMPTS = 3
_LOG_TAIL_LINES = 40
_HOST = "127.0.0.1"

# Instances started and not yet stopped. They are stopped (best effort) when the
# interpreter exits, so a run that forgets stop() leaves no JVM or temp dir behind; a
# SIGKILLed Python cannot do this. Strong references: an instance dropped without stop()
# must still be reachable here.
_live: set[LocalKafka] = set()


@atexit.register
def _stop_all_at_exit() -> None:
    for kafka in list(_live):
        with contextlib.suppress(Exception):
            kafka.stop()


class _AddressInUseError(KafkaLaunchError):
    """The broker could not bind one of its ports (someone took it after we picked it)."""


class LocalKafka:
    """One local Kafka broker+controller process (KRaft), listening on 127.0.0.1 only.

    Not thread-safe: drive one instance from one thread at a time.
    """

    def __init__(
        self,
        *,
        work_dir: Path | None = None,
        cache_dir: Path | None = None,
        heap_mb: int = 512,
        startup_timeout_s: float = 180.0,
        port: int | None = None,
        secure: SecureListeners | None = None,
    ) -> None:
        """Configure, but do not start, a broker.

        Args:
            work_dir: where config, log and data live. Kept as is by :meth:`stop`; when
                omitted a fresh temp dir is made at start and removed by :meth:`stop`.
                An already formatted work dir is reused with its data.
            cache_dir: where the jars are cached (default ``$PAYGATE_CACHE_DIR`` or
                ``~/.cache/paygate``).
            heap_mb: JVM heap (``-Xms``/``-Xmx``) in MiB.
            startup_timeout_s: bound on one launch attempt, from JVM start to ready.
            port: the PLAINTEXT port to listen on; a free one is picked when omitted.
            secure: also serve a ``SASL_SSL`` (SCRAM) and a mutual-TLS listener, on free
                ports (see :mod:`devtools.kafka.secure_listeners`); its SCRAM users are
                created when the storage is formatted.
        """
        if heap_mb < 128:
            raise ValueError(f"heap_mb={heap_mb} is too small for a Kafka broker (min 128)")
        if startup_timeout_s <= 0:
            raise ValueError("startup_timeout_s must be positive")
        self._given_work_dir = work_dir
        self._cache_dir = cache_dir
        self._heap_mb = heap_mb
        self._startup_timeout_s = startup_timeout_s
        self._fixed_port = port
        self._secure = secure
        self._secure_ports: tuple[int, int] | None = None
        self._work_dir: Path | None = None
        self._owns_work_dir = False
        self._port: int | None = None
        self._controller_port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ public API

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:<port>"``. Stays valid across :meth:`kill`/:meth:`restart`.

        Raises :class:`KafkaLaunchError` before :meth:`start` and after :meth:`stop`.
        """
        if self._port is None:
            raise KafkaLaunchError("LocalKafka is not started; call start() first")
        return f"{_HOST}:{self._port}"

    @property
    def sasl_ssl_bootstrap_servers(self) -> str:
        """``"127.0.0.1:<port>"`` of the ``SASL_SSL`` listener (needs ``secure``)."""
        return f"{_HOST}:{self._secure_port(0)}"

    @property
    def mtls_bootstrap_servers(self) -> str:
        """``"127.0.0.1:<port>"`` of the mutual-TLS listener (needs ``secure``)."""
        return f"{_HOST}:{self._secure_port(1)}"

    def _secure_port(self, index: int) -> int:
        if self._secure is None:
            raise KafkaLaunchError("this LocalKafka was made without secure listeners")
        if self._secure_ports is None:
            raise KafkaLaunchError("LocalKafka is not started; call start() first")
        return self._secure_ports[index]

    @property
    def port(self) -> int | None:
        """The PLAINTEXT port, once assigned by :meth:`start`."""
        return self._port

    @property
    def pid(self) -> int | None:
        """PID of the broker JVM while it runs (it also leads its own process group)."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def running(self) -> bool:
        """Whether the broker process is alive (it may still be starting up)."""
        return self.pid is not None

    @property
    def work_dir(self) -> Path | None:
        """The work dir in use (``None`` before start and after a temp dir was removed)."""
        return self._work_dir

    @property
    def log_path(self) -> Path | None:
        """The broker's log file, ``<work dir>/server.log``."""
        return None if self._work_dir is None else self._work_dir / "server.log"

    def start(self) -> str:
        """Start the broker, block until it serves, and return ``bootstrap_servers``.

        Downloads the jars on first use (see :func:`~devtools.kafka.jars.resolve_classpath`)
        and formats the storage when the work dir is new. Calling it while the broker runs
        just returns the address. Raises :class:`KafkaLaunchError` on failure, with no
        broker process left behind.
        """
        if self.running:
            return self.bootstrap_servers
        java = find_java()
        jars = resolve_classpath(self._cache_dir)
        made_temp_dir = self._work_dir is None and self._given_work_dir is None
        work_dir = self._ensure_work_dir()
        try:
            return self._start_with_retries(java, jars, work_dir)
        except BaseException:
            if made_temp_dir:  # nobody else knows this dir: do not leak it
                self.stop()
            raise

    def stop(self) -> None:
        """Stop the broker: SIGTERM, up to 20 s for a clean shutdown, then SIGKILL.

        Removes the work dir if it is a temp dir made by :meth:`start`. Safe to call more
        than once, and before :meth:`start`.
        """
        self._terminate(graceful=True)
        _live.discard(self)
        if self._owns_work_dir and self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None
            self._owns_work_dir = False
        self._port = self._controller_port = None
        self._secure_ports = None

    def kill(self) -> None:
        """SIGKILL the broker at once, as a crash would. Data and ports are kept, so
        :meth:`restart` brings the same broker back."""
        self._terminate(graceful=False)

    def restart(self, *, graceful: bool = True) -> None:
        """Stop the broker (gracefully, or SIGKILL when ``graceful`` is false) and start it
        again on the same ports with the same data dir; a no-op stop after :meth:`kill`.
        """
        if self._port is None or self._work_dir is None:
            raise KafkaLaunchError("restart() needs a broker that was started (and not stopped)")
        self._terminate(graceful=graceful)
        # Same ports: no retry with new ones, clients keep their bootstrap address.
        self._launch(find_java(), resolve_classpath(self._cache_dir), self._work_dir)

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

    def __repr__(self) -> str:
        addr = f"{_HOST}:{self._port}" if self._port is not None else "not started"
        return f"LocalKafka({addr}, pid={self.pid}, work_dir={self._work_dir})"

    # ------------------------------------------------------------------ internals

    def _start_with_retries(self, java: str, jars: list[Path], work_dir: Path) -> str:
        last_error: KafkaLaunchError | None = None
        for _attempt in range(_LAUNCH_ATTEMPTS):
            if self._port is None or self._controller_port is None:
                extra = 0 if self._secure is None else 2
                self._port, self._controller_port, *more = _pick_ports(self._fixed_port, extra)
                self._secure_ports = (more[0], more[1]) if more else None
            if self._port == self._fixed_port and not _can_bind(self._port):
                # Retrying cannot help with a port the caller chose: fail fast and clearly.
                raise KafkaLaunchError(f"port {_HOST}:{self._port} is already in use")
            fresh = not self._is_formatted()
            try:
                self._launch(java, jars, work_dir)
                return self.bootstrap_servers
            except _AddressInUseError as exc:
                last_error = exc
                # Pick other ports and retry. Storage this attempt formatted is wiped so
                # it is formatted again: `--standalone` records the controller endpoint.
                self._port = self._controller_port = self._secure_ports = None
                if fresh:
                    shutil.rmtree(self._data_dir(), ignore_errors=True)
        raise KafkaLaunchError(
            f"the broker could not bind its ports in {_LAUNCH_ATTEMPTS} attempts: {last_error}"
        ) from last_error

    def _ensure_work_dir(self) -> Path:
        if self._work_dir is None:
            if self._given_work_dir is not None:
                self._work_dir = self._given_work_dir.expanduser().resolve()
                self._work_dir.mkdir(parents=True, exist_ok=True)
            else:
                self._work_dir = Path(tempfile.mkdtemp(prefix="paygate-kafka-"))
                self._owns_work_dir = True
        return self._work_dir

    def _data_dir(self) -> Path:
        assert self._work_dir is not None
        return self._work_dir / "data"

    def _is_formatted(self) -> bool:
        return (self._data_dir() / "meta.properties").is_file()

    def _launch(self, java: str, jars: list[Path], work_dir: Path) -> None:
        """One attempt: write config, format if needed, spawn the JVM, wait until ready."""
        port, _ = self._ports()
        classpath = os.pathsep.join(str(jar) for jar in jars)
        # The JVM needs a real file path for the Log4j config; the package data may not be
        # one (zipped package), so each work dir gets its own copy.
        log4j_path = work_dir / "log4j2.xml"
        log4j_path.write_bytes(
            resources.files("devtools.kafka").joinpath("log4j2.xml").read_bytes()
        )
        config = work_dir / "server.properties"
        config.write_text(self._server_properties())
        if not self._is_formatted():
            self._format(java, classpath, log4j_path, config)

        log_path = work_dir / "server.log"
        cmd = [
            java,
            f"-Xmx{self._heap_mb}m",
            f"-Xms{self._heap_mb}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j_path}",
            f"-Dkafka.logs.dir={work_dir}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(config),
        ]
        with log_path.open("ab") as log:
            log.write(f"# paygate: starting the broker on {_HOST}:{port}\n".encode())
            log.flush()
            offset = log.tell()  # this launch's lines start here (the file is appended to)
            proc = subprocess.Popen(
                cmd,
                cwd=work_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: our Ctrl-C does not reach it
            )
        self._proc = proc
        _live.add(self)
        try:
            self._wait_ready(proc, log_path, offset)
        except BaseException:
            # Failed, timed out or interrupted (KeyboardInterrupt): leave no JVM behind.
            self._terminate(graceful=False)
            raise

    def _wait_ready(self, proc: subprocess.Popen[bytes], log_path: Path, offset: int) -> None:
        """Poll every 0.2 s for the started line plus a TCP connect, bounded in time."""
        port, cport = self._ports()
        deadline = time.monotonic() + self._startup_timeout_s
        while True:
            text = _read_from(log_path, offset)
            if _ADDRESS_IN_USE in text:
                line = next(ln for ln in text.splitlines() if _ADDRESS_IN_USE in ln)
                raise _AddressInUseError(f"port {port} or {cport} was taken: {line.strip()}")
            if _STARTED_LINE in text and _can_connect(port):
                return
            code = proc.poll()
            if code is not None:
                text = _read_from(log_path, offset)
                error = _AddressInUseError if _ADDRESS_IN_USE in text else KafkaLaunchError
                raise error(
                    f"the Kafka broker exited with code {code} during startup; "
                    f"last lines of {log_path}:\n{tail(text, _LOG_TAIL_LINES)}"
                )
            if time.monotonic() >= deadline:
                raise KafkaLaunchError(
                    f"the Kafka broker was not ready within {self._startup_timeout_s:.0f} s "
                    f"(no '{_STARTED_LINE}' line and open port {port}); "
                    f"last lines of {log_path}:\n{tail(text, _LOG_TAIL_LINES)}"
                )
            time.sleep(_POLL_INTERVAL_S)

    def _format(self, java: str, classpath: str, log4j_path: Path, config: Path) -> None:
        """``kafka-storage format --standalone``: a new single-voter KRaft cluster."""
        cmd = [
            java,
            "-Xmx256m",
            "-XX:TieredStopAtLevel=1",  # short-lived JVM: skip the optimising JIT
            f"-Dlog4j2.configurationFile={log4j_path}",
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            _random_cluster_id(),
            "-c",
            str(config),
        ]
        if self._secure is not None:
            cmd += secure_listeners.scram_format_arguments(self._secure)
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=_FORMAT_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise KafkaLaunchError(
                f"formatting the Kafka storage took over {_FORMAT_TIMEOUT_S:.0f} s"
            ) from exc
        if proc.returncode != 0 or not self._is_formatted():
            raise KafkaLaunchError(
                f"formatting the Kafka storage failed (exit {proc.returncode}):\n"
                f"{tail(proc.stdout, _LOG_TAIL_LINES)}"
            )

    def _ports(self) -> tuple[int, int]:
        """(PLAINTEXT port, CONTROLLER port); only called once both are assigned."""
        if self._port is None or self._controller_port is None:
            raise KafkaLaunchError("internal error: ports are not assigned")
        return self._port, self._controller_port

    def _server_properties(self) -> str:
        port, cport = self._ports()
        listeners = [f"PLAINTEXT://{_HOST}:{port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        more: dict[str, str] = {}
        if self._secure is not None and self._secure_ports is not None:
            listeners += secure_listeners.listeners(_HOST, *self._secure_ports)
            protocols += secure_listeners.protocol_map()
            more = secure_listeners.listener_properties(self._secure)
        props = {
            # One JVM is the whole cluster: broker and its own single KRaft controller.
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{_HOST}:{cport}",
            "listeners": ",".join([*listeners, f"CONTROLLER://{_HOST}:{cport}"]),
            "advertised.listeners": ",".join(listeners),
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": ",".join(protocols),
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self._data_dir()),
            "num.partitions": "3",
            # Internal topics: one replica, few partitions (fewer partitions start faster).
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "3",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.cleaner.dedupe.buffer.size": "2097152",
            "auto.create.topics.enable": "false",
            "delete.topic.enable": "true",
            # After a SIGKILL the restarted controller still holds the dead broker's
            # registration and refuses the new one (DUPLICATE_BROKER_REGISTRATION) until
            # that session times out: 9 s by default, shortened for quick chaos restarts.
            "broker.heartbeat.interval.ms": "1000",
            "broker.session.timeout.ms": "4000",
            **more,
        }
        lines = ["# Written by devtools.kafka.LocalKafka on every start; edits are lost."]
        lines += [f"{key}={value}" for key, value in props.items()]
        return "\n".join(lines) + "\n"

    def _terminate(self, *, graceful: bool) -> None:
        """End the broker process (if any) and reap it; keeps work dir and ports."""
        proc = self._proc
        if proc is None:
            return
        try:
            if graceful and proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=_STOP_TIMEOUT_S)
        finally:
            # Also reached when interrupted during the graceful wait: never leave it running.
            if proc.poll() is None:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=_KILL_WAIT_S)
            self._proc = None


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the broker's process group (its pid, thanks to ``start_new_session``)."""
    # Only called before the process is reaped, so the pid cannot have been reused.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _pick_ports(fixed_port: int | None, extra: int = 0) -> list[int]:
    """A PLAINTEXT port (``fixed_port`` or a free one), a different free controller port,
    then ``extra`` more free ports, all different.

    The sockets are held open together so the picks differ; they are closed before
    Kafka binds, so another process may grab one in between (handled by a retry).
    """
    wanted = (1 if fixed_port is not None else 2) + extra
    with contextlib.ExitStack() as stack:
        picked: list[int] = []
        while len(picked) < wanted:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((_HOST, 0))
            port = int(sock.getsockname()[1])
            if port != fixed_port:
                picked.append(port)
    return [fixed_port, *picked] if fixed_port is not None else picked


def _can_bind(port: int) -> bool:
    """Whether ``port`` is free on 127.0.0.1 (with SO_REUSEADDR, as Kafka binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
        return True


def _can_connect(port: int) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _random_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, base64url without padding (22 chars).

    Like Kafka's ``Uuid.randomUuid()``, ids starting with "-" are avoided, since a CLI
    would take them for an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not cluster_id.startswith("-"):
            return cluster_id
