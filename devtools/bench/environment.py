"""What the cases run on: the broker, the database of each pipeline case, the machine."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from devtools.kafka import LocalKafka


class BenchError(RuntimeError):
    """A case could not be measured; the message says what to look at."""


@dataclass(frozen=True, slots=True)
class Broker:
    bootstrap_servers: str
    description: str


@contextlib.asynccontextmanager
async def broker(configured: str | None) -> AsyncIterator[Broker]:
    """The configured broker, or a local one started here and stopped on the way out."""
    if configured:
        yield Broker(configured, f"{configured} (from KAFKA_BOOTSTRAP_SERVERS)")
        return
    print("KAFKA_BOOTSTRAP_SERVERS is unset: starting a local Kafka broker ...", flush=True)
    kafka = LocalKafka()
    try:
        # start() blocks (bounded by its own startup timeout) until the broker serves.
        bootstrap = await asyncio.to_thread(kafka.start)
        yield Broker(bootstrap, f"{bootstrap} (LocalKafka started by the bench)")
    finally:
        await asyncio.to_thread(kafka.stop)


@contextlib.contextmanager
def case_database(database_url: str | None, case: str) -> Iterator[str]:
    """The URL a pipeline case writes to: the given one, or a fresh SQLite file."""
    if database_url is not None:
        yield database_url
        return
    with tempfile.TemporaryDirectory(prefix=f"paygate-bench-{case}-") as tmp:
        yield f"sqlite+aiosqlite:///{Path(tmp) / 'paygate.db'}"


def describe_database(database_url: str | None) -> str:
    if database_url is None:
        return "SQLite (aiosqlite, WAL), a fresh file per pipeline case"
    url = make_url(database_url)
    shown = url.render_as_string(hide_password=True)
    return f"{url.get_backend_name()} at {shown} (shared by the pipeline cases)"


def describe_machine() -> str:
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    cpu = (
        f"{cores} cores" if usable == cores else f"{cores} cores ({usable} usable by this process)"
    )
    return (
        f"{cpu}, {platform.system()} {platform.machine()}, "
        f"{platform.python_implementation()} {platform.python_version()}"
    )


def describe_load() -> str:
    """The load averages now: the machine may be shared, and the figures depend on it."""
    if not hasattr(os, "getloadavg"):
        return "unknown"
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f} (1, 5, 15 min) on {os.cpu_count() or 0} cores"


def uptime() -> str:
    """``uptime``'s line (the load averages with the time and the users), printed beside
    every figure of a bench on a machine that may be shared; the load averages alone where
    the command is missing."""
    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        load = os.getloadavg() if hasattr(os, "getloadavg") else ()
        return "load average: " + ", ".join(f"{x:.2f}" for x in load)


def describe_revision() -> str:
    """The git commit measured, and whether the work tree differed from it."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"{head} with uncommitted changes" if dirty else head


def revision_of(checkout: Path) -> str:
    """The short commit of another checkout, or its directory's name when it is not a git
    checkout (a ``git archive`` export)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return checkout.name


def _git(*args: str) -> str:
    here = Path(__file__).parent  # the checkout this code runs from, whatever the cwd
    result = subprocess.run(
        ["git", *args], cwd=here, capture_output=True, text=True, timeout=10, check=True
    )
    return result.stdout.strip()
