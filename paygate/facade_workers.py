"""``paygate facade --workers N``: N facade processes on one port, forked from a supervisor.

One Python process uses one core; past that, the facade scales by processes. The
supervisor picks the port (``PAYGATE_HTTP_PORT``, or a free one when it is 0), then forks N
workers before any event loop, socket, Kafka client or database engine exists. Each worker
is a whole facade (its own producer, result listener, engine and ops listener) that binds
its own listening socket to the shared port with ``SO_REUSEPORT``, so the kernel spreads
new connections over the workers by their address hash, rather than letting whichever
worker wakes first accept them all.

Invariants:

* ``PAYGATE_URL=`` is printed once, after every worker listens: a client that connects
  as soon as it reads the line is spread over all of them, not only the first.
* Worker i's ops listener is on ``PAYGATE_FACADE_OPS_PORT`` + i (or any free port when 0).
* SIGTERM or SIGINT to the supervisor stops every worker (each drains like a lone facade);
  a worker that exits by itself makes the supervisor stop the others and exit 1, so its
  own supervisor (systemd, Kubernetes) restarts the whole, never a half.
* The rate limit means the same whatever N: its state is in the database
  (:mod:`persistence.rate_limit_store`), not in a worker.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Final

from paygate.settings import Settings

_READY_TIMEOUT_S: Final = 120.0

# A worker's body: serve with these settings on a SO_REUSEPORT socket, call ``ready`` once
# listening, return when stopped. Returns the exit status.
RunWorker = Callable[[Settings, Callable[[], None]], int]


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound (not listening) to ``host:port`` with SO_REUSEPORT, which keeps a port
    picked for 0 from being taken before the workers bind it. Connections never reach it:
    the kernel spreads them over listening sockets only."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reserved = socket.socket(family, socket.SOCK_STREAM)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserved.bind((host, port))
    return reserved


def run_facade_workers(settings: Settings, workers: int, run_worker: RunWorker) -> int:
    """Fork ``workers`` facades on one port and supervise them; the exit status."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    reserved = reserve_port(settings.http_host, settings.http_port)
    port = reserved.getsockname()[1]
    ready_read, ready_write = os.pipe()
    pool = _Workers()
    for index in range(workers):
        ops_port = settings.facade_ops_port + index if settings.facade_ops_port else 0
        worker_settings = settings.model_copy(
            update={"http_port": port, "facade_ops_port": ops_port}
        )
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's code
            os.close(ready_read)
            reserved.close()
            status = 1
            try:
                status = run_worker(worker_settings, lambda: _write_byte(ready_write))
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        pool.running.add(pid)
    os.close(ready_write)
    signal.signal(signal.SIGTERM, pool.stop)
    signal.signal(signal.SIGINT, pool.stop)
    try:
        if pool.all_ready(ready_read, workers):
            print(f"PAYGATE_URL=https://{_shown(settings.http_host)}:{port}", flush=True)
        else:
            pool.stop()
        reserved.close()
        return pool.supervise()
    finally:
        os.close(ready_read)
        reserved.close()


def _write_byte(fd: int) -> None:
    os.write(fd, b".")


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class _Workers:
    """The forked workers: which still run, and whether the supervisor was told to stop."""

    def __init__(self) -> None:
        self.running: set[int] = set()
        self.stopping = False
        self.failed = False

    def stop(self, _signum: int | None = None, _frame: object = None) -> None:
        self.stopping = True
        for pid in self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def all_ready(self, ready_read: int, workers: int) -> bool:
        """True once every worker wrote its byte; False if one exited first or time ran
        out."""
        seen = 0
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while seen < workers and time.monotonic() < deadline and not self.stopping:
            readable, _, _ = select.select([ready_read], [], [], 0.5)
            if readable:
                data = os.read(ready_read, workers)
                if not data:
                    return False  # every write end closed: the workers are gone
                seen += len(data)
            elif self._reap(os.WNOHANG):
                return False
        return seen >= workers

    def supervise(self) -> int:
        """Wait for every worker; when one exits unasked, stop the rest. 0 only if every
        worker exited 0 after being told to stop."""
        while self.running:
            self._reap(0)
        return 1 if self.failed else 0

    def _reap(self, options: int) -> bool:
        """Collect one exited worker (waiting for it unless WNOHANG); True if one was."""
        try:
            pid, wait_status = os.waitpid(-1, options)
        except ChildProcessError:
            self.running.clear()
            return False
        if pid == 0:
            return False
        self.running.discard(pid)
        if os.waitstatus_to_exitcode(wait_status) != 0 or not self.stopping:
            self.failed = True
            self.stop()
        return True
