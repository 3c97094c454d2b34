"""py-spy beside a REST bench step: what the facade's processes spent their samples on.

``py-spy record`` samples the facade (its workers too) for the length of a step and writes
collapsed stacks (one line per distinct stack with its sample count, the input of
flamegraph.pl and speedscope) to the directory given with ``--profile``, which is meant to
be outside the repository: the findings, not the graphs, are what ``docs/performance.md``
keeps.

Only the thread holding the GIL is sampled (``--gil``): the facade's Python CPU. Sampling
every thread counted aiosqlite's and the thread pool's waiting threads as busy (82 to 94 %
of the samples in earlier profiles), which hid where the event loop's time went; what runs
without the GIL (SQLite's C code, TLS) is what the bench's CPU figure adds to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from devtools.bench.environment import BenchError

_RATE_HZ: Final = 200


def py_spy_binary() -> Path:
    """py-spy next to this interpreter's scripts or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file():
        return beside
    found = shutil.which("py-spy")
    if found is None:
        raise BenchError("--profile needs py-spy: pip install py-spy")
    return Path(found)


@contextlib.asynccontextmanager
async def profiled(pid: int, out_dir: Path | None, name: str) -> AsyncIterator[None]:
    """Sample ``pid`` and its subprocesses while the body runs (nothing without a dir)."""
    if out_dir is None:
        yield
        return
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    py_spy = py_spy_binary()
    raw = out_dir / f"{name}.txt"
    process = await asyncio.create_subprocess_exec(
        str(py_spy),
        "record",
        "--pid",
        str(pid),
        "--subprocesses",
        "--gil",
        "--rate",
        str(_RATE_HZ),
        "--format",
        "raw",
        "--output",
        str(raw),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        # SIGINT makes py-spy stop sampling and write what it has.
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(2)
        await process.wait()
