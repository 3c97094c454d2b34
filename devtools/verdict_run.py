"""What every verdict run (``devtools.chaos``, ``devtools.outage``) does around its own work.

Both are commands a person or CI starts and reads the exit code of: they print the command
and its options, work in a directory whose logs are kept when a check failed (or when
asked), print the verdict's table, and exit 0 (every check passed), 1 (a check failed), 2
(the run could not be carried out, so nothing was proven either way) or 130 (interrupted;
SIGTERM ends a run as Ctrl-C does, cancelled, so every process it started is stopped).
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Final, Protocol

from paygate.settings import Settings

EXIT_ERROR: Final = 2
EXIT_INTERRUPTED: Final = 130


class Verdict(Protocol):
    """A run's judgement (``devtools.chaos.report.Verdict``)."""

    @property
    def passed(self) -> bool: ...

    def render(self) -> str: ...


class RunOptions(Protocol):
    """The options every verdict run has (a dataclass; its fields are printed)."""

    @property
    def work_dir(self) -> Path | None: ...

    @property
    def keep_work_dir(self) -> bool: ...


async def run_in_work_dir(
    options: RunOptions,
    command_line: str,
    prefix: str,
    run: Callable[[Path], Awaitable[Verdict]],
) -> int:
    """Print the run's header, run it, print its verdict; 0 if it passed, else 1.

    A temporary work directory is removed only after a run that passed; otherwise (a failed
    check, an error, ``--keep-work-dir``) its logs stay and their place is printed.
    """
    work_dir = options.work_dir or Path(tempfile.mkdtemp(prefix=prefix))
    work_dir.mkdir(parents=True, exist_ok=True)
    print(f"command: {command_line}", flush=True)
    print(f"options: {describe(options)}", flush=True)
    print(f"work dir: {work_dir}", flush=True)
    verdict: Verdict | None = None
    try:
        verdict = await run(work_dir)
    finally:
        temporary = options.work_dir is None and not options.keep_work_dir
        if verdict is not None and verdict.passed and temporary:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            print(f"logs kept in {work_dir}", flush=True)
    print(flush=True)
    print(verdict.render(), flush=True)
    return 0 if verdict.passed else 1


def describe(options: object) -> str:
    """``name=value`` for every field of an options dataclass, in declaration order."""
    assert is_dataclass(options)
    return " ".join(f"{field.name}={getattr(options, field.name)}" for field in fields(options))


async def run_as_command(name: str, run: Callable[[str], Awaitable[int]]) -> int:
    """Run ``run(command_line)`` as the ``name`` run's command: exit codes as above."""
    command_line = shlex.join(getattr(sys, "orig_argv", sys.argv))
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await run(command_line)
    except asyncio.CancelledError:
        print(f"{name} run interrupted; every process it started was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        logging.getLogger(f"devtools.{name}").exception(f"{name} run failed")
        print(f"{name} run could not complete: {exc}", file=sys.stderr)
        return EXIT_ERROR


def command_main(
    run_command: Callable[[Settings, Sequence[str]], Coroutine[None, None, int]],
    argv: Sequence[str] | None,
) -> int:
    """The ``python -m`` entry point: logging set up, then ``run_command`` under asyncio."""
    args = list(sys.argv[1:] if argv is None else argv)
    _configure_logging()
    try:
        return asyncio.run(run_command(Settings(), args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _configure_logging() -> None:
    """Progress as plain text on stderr; the table goes to stdout."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # A client logs every refused connection while the broker restarts; the runs report
    # their resends themselves.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
