"""vegeta, the open-loop load generator of ``python -m devtools.bench rest``.

Open loop: vegeta sends at the offered rate whatever the answers take, starting more
workers as needed, so a slow server is measured as slow rather than offered less load
(which a closed loop of N clients would do, hiding the latency it causes).

Where the binary comes from, first found wins: ``VEGETA_BIN``; the Go cache the test
services use (``~/.cache/paygate/go/bin/vegeta``, where stripe-mock lives); ``vegeta`` on
PATH; else, when Go is installed, ``go install`` of the pinned version into that cache.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from devtools.bench.environment import BenchError

VEGETA_VERSION: Final = "v12.13.0"
VEGETA_MODULE: Final = "github.com/tsenart/vegeta/v12"
BIN_ENV: Final = "VEGETA_BIN"
GO_BIN_DIR: Final = Path.home() / ".cache" / "paygate" / "go" / "bin"
_INSTALL_TIMEOUT_S: Final = 900.0
_NS_PER_MS: Final = 1_000_000.0


def vegeta_binary() -> Path:
    """The vegeta to run, installed into the cache first if there is none."""
    from_env = os.environ.get(BIN_ENV)
    if from_env:
        if not _executable(Path(from_env)):
            raise BenchError(f"{BIN_ENV}={from_env} is not an executable file")
        return Path(from_env)
    cached = GO_BIN_DIR / "vegeta"
    if _executable(cached):
        return cached
    on_path = shutil.which("vegeta")
    if on_path:
        return Path(on_path)
    return _install()


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _install() -> Path:
    go = shutil.which("go")
    if go is None:
        raise BenchError(
            f"vegeta not found ({BIN_ENV}, {GO_BIN_DIR}, PATH) and Go is not installed to "
            f"install it: go install {VEGETA_MODULE}@{VEGETA_VERSION}"
        )
    print(
        f"vegeta not found: installing {VEGETA_MODULE}@{VEGETA_VERSION} into {GO_BIN_DIR} "
        f"with go install (once; set {BIN_ENV} to use another binary) ...",
        flush=True,
    )
    GO_BIN_DIR.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            [go, "install", f"{VEGETA_MODULE}@{VEGETA_VERSION}"],
            env={**os.environ, "GOBIN": str(GO_BIN_DIR)},
            capture_output=True,
            text=True,
            timeout=_INSTALL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(
            f"go install of vegeta did not finish in {_INSTALL_TIMEOUT_S:.0f} s"
        ) from exc
    binary = GO_BIN_DIR / "vegeta"
    if done.returncode != 0 or not _executable(binary):
        raise BenchError(f"go install of vegeta failed:\n{done.stderr[-2000:]}")
    return binary


@dataclass(frozen=True, slots=True)
class Target:
    """One request, in vegeta's JSON target format."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes

    def line(self) -> str:
        return json.dumps(
            {
                "method": self.method,
                "url": self.url,
                "header": {name: [value] for name, value in self.headers.items()},
                "body": base64.b64encode(self.body).decode("ascii"),
            },
            separators=(",", ":"),
        )


def write_targets(path: Path, targets: Iterable[Target]) -> int:
    """Write one target a line; vegeta sends them in order, each once while they last."""
    count = 0
    with path.open("w") as out:
        for target in targets:
            out.write(target.line())
            out.write("\n")
            count += 1
    return count


@dataclass(frozen=True, slots=True)
class StepReport:
    """What ``vegeta report -type=json`` says about one step, latencies in milliseconds."""

    sent_per_s: float  # the rate vegeta achieved, close to the one asked for
    requests: int
    throughput_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    status_codes: Mapping[str, int]
    errors: tuple[str, ...]

    @property
    def failures(self) -> int:
        """Requests that did not get the answer asked for: any status but 200, timeouts
        and connection errors (status "0") included."""
        return self.requests - self.status_codes.get("200", 0)

    @classmethod
    def parse(cls, report: Mapping[str, Any]) -> StepReport:
        latencies = report["latencies"]
        return cls(
            sent_per_s=float(report["rate"]),
            requests=int(report["requests"]),
            throughput_per_s=float(report["throughput"]),
            p50_ms=latencies["50th"] / _NS_PER_MS,
            p90_ms=latencies["90th"] / _NS_PER_MS,
            p99_ms=latencies["99th"] / _NS_PER_MS,
            max_ms=latencies["max"] / _NS_PER_MS,
            status_codes={str(k): int(v) for k, v in (report.get("status_codes") or {}).items()},
            errors=tuple(report.get("errors") or ()),
        )


async def attack(
    vegeta: Path,
    targets: Path,
    *,
    rate_per_s: int,
    duration_s: float,
    timeout_s: float,
    work_dir: Path,
) -> StepReport:
    """Send ``rate_per_s`` for ``duration_s`` from ``targets`` and report on the answers.

    Certificates are not verified (``-insecure``): the facade's is self-signed, and
    verification costs the client, not the server measured. The handshake still happens.
    """
    results = work_dir / f"results-{rate_per_s}.bin"
    await _run(
        vegeta,
        "attack",
        "-format=json",
        f"-targets={targets}",
        f"-rate={rate_per_s}/1s",
        f"-duration={duration_s:g}s",
        f"-timeout={timeout_s:g}s",
        "-insecure",
        # aiohttp speaks HTTP/1.1 only; asking for h2 would only add a failed ALPN step.
        "-http2=false",
        f"-output={results}",
    )
    report = await _run(vegeta, "report", "-type=json", str(results))
    return StepReport.parse(json.loads(report))


async def _run(vegeta: Path, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(vegeta),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise BenchError(f"vegeta {args[0]} exited {process.returncode}: {err.decode()[-2000:]}")
    return out.decode()
