"""The processes the REST bench drives: paygate as production runs it, and the ceiling.

A paygate stack is a consumer process and a facade process (``paygate facade --workers N``
when N > 1), on the bench's broker, with topics, a consumer group, a database and an API key
of its own, so stacks measured one after the other do not share a backlog or a table. A
stack may run the code of another checkout (``checkout``): its processes then run with that
directory first on ``sys.path`` and as their working directory, in this interpreter, which
is how a before-and-after comparison runs side by side in one bench run.

Every child runs in a session of its own, writes its output to a log file in the work dir,
and is stopped with SIGTERM (then SIGKILL, bounded) on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from sqlalchemy.engine import make_url

from devtools.bench.environment import BenchError
from devtools.chaos.harness import Child, child_environment
from paygate.settings import Environment, Settings
from paygate.topics import ensure_topics

_START_TIMEOUT_S: Final = 120.0
_POLL_S: Final = 0.2
_CONSUMER_READY_LINE: Final = '"msg":"consumer started"'
# The bench measures the front door, not the limit: every request of a step is one client's.
_UNLIMITED_RATE_PER_S: Final = 1_000_000.0


@dataclass(frozen=True, slots=True)
class StackSpec:
    """What one measured stack runs: which code, how many facade workers, which store."""

    label: str
    workers: int = 1
    checkout: Path | None = None
    # Settings of the facade only, on top of the stack's (e.g. PAYGATE_EVENT_LOOP).
    facade_env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunningStack:
    url: str
    api_key: str
    facade: Child
    # The stack's settings: its topics and database, for a bench that reads them back.
    settings: Settings


async def spawn_child(
    name: str,
    args: list[str],
    *,
    env: dict[str, str],
    work_dir: Path,
    checkout: Path | None = None,
) -> Child:
    """``python <args>`` with stdout piped (for its announcement) and stderr in a log."""
    log_path = work_dir / f"{name}.log"
    if checkout is not None:
        env = {**env, "PYTHONPATH": os.pathsep.join([str(checkout), env.get("PYTHONPATH", "")])}
    with log_path.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            env=env,
            cwd=checkout,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
            start_new_session=True,
        )
    return Child(name, process, log_path)


async def announced(child: Child, prefix: str, timeout_s: float = _START_TIMEOUT_S) -> str:
    """The value of the first ``PREFIX=value`` line ``child`` prints."""
    stdout = child.process.stdout
    assert stdout is not None

    async def read() -> str:
        while line := (await stdout.readline()).decode(errors="replace"):
            if line.startswith(prefix):
                return line.strip().split("=", 1)[1]
        raise BenchError(f"{child} exited before printing {prefix!r}:\n{child.log_tail()}")

    try:
        value = await asyncio.wait_for(read(), timeout_s)
    except TimeoutError as exc:
        raise BenchError(f"{child} printed no {prefix!r} in {timeout_s:.0f} s") from exc
    # Keep draining stdout, so a chatty child never blocks on a full pipe.
    asyncio.get_running_loop().create_task(_drain(stdout))
    return value


async def _drain(stdout: asyncio.StreamReader) -> None:
    while await stdout.read(65536):
        pass


async def _consumer_ready(child: Child) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while _CONSUMER_READY_LINE not in child.log_path.read_text(errors="replace"):
        if child.returncode is not None:
            raise BenchError(f"{child} exited during start-up:\n{child.log_tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"{child} did not start in time:\n{child.log_tail()}")
        await asyncio.sleep(_POLL_S)


def describe_stack_database(database_url: str | None) -> str:
    """What :func:`paygate_stack` stores in, for a bench's header."""
    if database_url is None:
        return "SQLite (aiosqlite, WAL, synchronous as configured), a new file per stack"
    url = make_url(database_url)
    shown = url.render_as_string(hide_password=True)
    return f"{url.get_backend_name()} at {shown}, a new database on it per stack"


@contextlib.asynccontextmanager
async def paygate_stack(
    spec: StackSpec, bootstrap: str, database_url: str | None, work_dir: Path
) -> AsyncIterator[RunningStack]:
    """Consumer and facade processes of ``spec``, ready to serve; stopped on the way out."""
    await asyncio.to_thread(work_dir.mkdir, parents=True)
    suffix = uuid.uuid4().hex[:8]
    async with _fresh_database(database_url, work_dir, suffix) as url:
        settings = Settings(
            env=Environment.DEVELOPMENT,
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            commands_topic=f"bench-rest.commands.{suffix}",
            results_topic=f"bench-rest.results.{suffix}",
            dlq_topic=f"bench-rest.dlq.{suffix}",
            consumer_group=f"bench-rest-{suffix}",
            database_url=url,
            provider="sandbox-inprocess",
            tls_dir=work_dir / "tls",
            http_port=0,
            metrics_port=0,
            facade_ops_port=0,
            rate_limit_per_s=_UNLIMITED_RATE_PER_S,
            rate_limit_burst=1_000_000,
        )
        await ensure_topics(settings)
        env = child_environment(settings)
        api_key = await _create_api_key(env, work_dir, spec.checkout)
        children: list[Child] = []
        try:
            consumer = await spawn_child(
                "consumer",
                ["-m", "paygate.cli", "consumer"],
                env=env,
                work_dir=work_dir,
                checkout=spec.checkout,
            )
            children.append(consumer)
            await announced(consumer, "PAYGATE_OPS_URL=")
            await _consumer_ready(consumer)
            facade_args = ["-m", "paygate.cli", "facade"]
            if spec.workers > 1:
                facade_args += ["--workers", str(spec.workers)]
            facade = await spawn_child(
                "facade",
                facade_args,
                env={**env, **spec.facade_env},
                work_dir=work_dir,
                checkout=spec.checkout,
            )
            children.append(facade)
            url_of_facade = await announced(facade, "PAYGATE_URL=")
            yield RunningStack(url_of_facade, api_key, facade, settings)
        finally:
            for child in reversed(children):
                await child.terminate()


async def _create_api_key(env: dict[str, str], work_dir: Path, checkout: Path | None) -> str:
    child = await spawn_child(
        "apikey",
        ["-m", "paygate.cli", "apikey", "create", "--client", "bench"],
        env=env,
        work_dir=work_dir,
        checkout=checkout,
    )
    assert child.process.stdout is not None
    out = await child.process.stdout.read()
    if await child.process.wait() != 0:
        raise BenchError(f"paygate apikey create failed:\n{child.log_tail()}")
    api_key: str = json.loads(out)["apiKey"]
    return api_key


@contextlib.asynccontextmanager
async def _fresh_database(
    database_url: str | None, work_dir: Path, suffix: str
) -> AsyncIterator[str]:
    """A new SQLite file in the work dir, or a new database on the given PostgreSQL server
    (dropped afterwards), so that every stack starts from an empty store."""
    if database_url is None:
        yield f"sqlite+aiosqlite:///{work_dir / 'paygate.db'}"
        return
    import asyncpg  # type: ignore[import-untyped]  # a dependency of the PostgreSQL URL the caller passed

    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        raise BenchError("--database-url: only PostgreSQL is supported (SQLite is the default)")
    name = f"paygate_bench_{suffix}"
    admin_dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def ceiling_server(work_dir: Path) -> AsyncIterator[tuple[str, Child]]:
    """The bare aiohttp TLS handler (:mod:`devtools.bench.ceiling`), ready to serve."""
    await asyncio.to_thread(work_dir.mkdir, parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGATE_")}
    child = await spawn_child(
        "ceiling",
        ["-m", "devtools.bench.ceiling", "--tls-dir", str(work_dir / "tls")],
        env=env,
        work_dir=work_dir,
    )
    try:
        yield await announced(child, "CEILING_URL="), child
    finally:
        await child.terminate()
