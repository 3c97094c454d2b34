"""``python -m devtools.bench rest``: the REST front door at a series of offered rates.

Each stack (the ceiling, an optional baseline checkout, then this checkout's facade with each
``--workers`` count) is started fresh, warmed up, then driven step by step: vegeta offers
``POST /v1/payments`` with ``Prefer: wait=N`` at a constant rate for the step's duration,
each request a new order (so a new payment), and the step's row is printed as soon as it
is measured. Timing is never asserted: the closing lines say which goals were met.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from devtools.bench.command import bench_exit_code, say
from devtools.bench.environment import (
    broker,
    describe_machine,
    describe_revision,
    revision_of,
    uptime,
)
from devtools.bench.process_cpu import MIN_MEASURABLE_S, tree_cpu_s
from devtools.bench.profiler import profiled
from devtools.bench.rest_options import RestOptions, parse_rest_options
from devtools.bench.rest_report import HEADER, Step, failure_lines, goal_lines, step_row
from devtools.bench.rest_request import payment_body
from devtools.bench.rest_stack import (
    StackSpec,
    ceiling_server,
    describe_stack_database,
    paygate_stack,
)
from devtools.bench.vegeta import Target, attack, vegeta_binary, write_targets
from devtools.chaos.harness import Child
from paygate.settings import Settings

_WARMUP_RATE: Final = 20
CEILING: Final = "ceiling"


def main(argv: Sequence[str]) -> int:
    options = parse_rest_options(argv)
    command = shlex.join(["python", "-m", "devtools.bench", "rest", *argv])
    return bench_exit_code(run_rest_bench(options, command))


def _specs(options: RestOptions) -> list[StackSpec]:
    specs = []
    if options.baseline is not None:
        specs.append(StackSpec(f"baseline {revision_of(options.baseline)}", 1, options.baseline))
    specs += [StackSpec(f"facade w{n}", n) for n in options.workers]
    if options.rate_limit_writes:
        # A lease is at most a tenth of the burst: with 10, one token, one write a request.
        specs.append(
            StackSpec("facade w1 limit-write", 1, facade_env={"PAYGATE_RATE_LIMIT_BURST": "10"})
        )
    if options.uvloop:
        specs.append(StackSpec("facade w1 uvloop", 1, facade_env={"PAYGATE_EVENT_LOOP": "uvloop"}))
    return specs


async def run_rest_bench(options: RestOptions, command: str) -> None:
    vegeta = vegeta_binary()
    say(
        f"command: {command}",
        f"machine: {describe_machine()}",
        f"interpreter: {sys.executable}",
        f"revision: {describe_revision()}",
        f"load generator: {vegeta} (open loop), POST /v1/payments, Prefer: wait={options.wait_s}, "
        f"a new order per request, {options.duration_s:g} s per step, "
        f"client timeout {options.timeout_s:g} s",
        "provider: sandbox-inprocess; facade and consumer in separate processes",
        f"database: {describe_stack_database(options.database_url)}",
        f"uptime at start: {uptime()}",
    )
    steps: list[Step] = []
    with tempfile.TemporaryDirectory(prefix="paygate-bench-rest-") as tmp:
        work = Path(tmp)
        if options.ceiling:
            async with ceiling_server(work / CEILING) as (url, child):
                steps += await _drive(CEILING, url, None, child, options, vegeta, work)
        async with broker(Settings().kafka_bootstrap_servers) as kafka:
            say(f"broker: {kafka.description}")
            for index, spec in enumerate(_specs(options)):
                stack_dir = work / f"stack-{index}"
                async with paygate_stack(
                    spec, kafka.bootstrap_servers, options.database_url, stack_dir
                ) as stack:
                    steps += await _drive(
                        spec.label, stack.url, stack.api_key, stack.facade, options, vegeta, work
                    )
    say("", f"uptime at end: {uptime()}", "", *HEADER, *(step_row(s) for s in steps), "")
    for label in dict.fromkeys(s.stack for s in steps):
        if label != CEILING:
            say(*goal_lines(label, steps))


async def _drive(
    label: str,
    url: str,
    api_key: str | None,
    server: Child,
    options: RestOptions,
    vegeta: Path,
    work: Path,
) -> list[Step]:
    """Warm up, then one step per rate; prints each row as it is measured."""
    step_dir = work / f"vegeta-{uuid.uuid4().hex[:6]}"
    step_dir.mkdir()
    say("", f"{label}: {url}, uptime {uptime()}", *HEADER)
    targets = step_dir / "warmup.jsonl"
    write_targets(targets, _targets(url, api_key, options, int(_WARMUP_RATE * options.warmup_s)))
    await attack(
        vegeta,
        targets,
        rate_per_s=_WARMUP_RATE,
        duration_s=options.warmup_s,
        timeout_s=options.timeout_s,
        work_dir=step_dir,
    )
    steps: list[Step] = []
    for index, rate in enumerate(options.rates):
        if steps and steps[-1].collapsed:
            # A higher rate only fails more, and each failure costs the client timeout.
            skipped = ", ".join(f"{r}/s" for r in options.rates[index:])
            say(f"  {label}: skipped {skipped}: most requests of the step before failed")
            break
        await asyncio.sleep(options.pause_s)
        targets = step_dir / f"targets-{rate}.jsonl"
        # A few more than the step sends: vegeta starts over at the first when it runs out.
        count = int(rate * options.duration_s * 1.05) + 10
        write_targets(targets, _targets(url, api_key, options, count))
        cpu_before = tree_cpu_s(server.pid)
        profile_name = f"{label.replace(' ', '-')}-{rate}"
        async with profiled(server.pid, options.profile_dir, profile_name):
            report = await attack(
                vegeta,
                targets,
                rate_per_s=rate,
                duration_s=options.duration_s,
                timeout_s=options.timeout_s,
                work_dir=step_dir,
            )
        cpu_after = tree_cpu_s(server.pid)
        # Unknown without /proc, and too coarse to say when a short, light step used only
        # a few clock ticks (the bare handler at a low rate: one tick can be 0 or 2 ms/req).
        cpu = (
            None
            if cpu_before is None
            or cpu_after is None
            or report.requests == 0
            or cpu_after - cpu_before < MIN_MEASURABLE_S
            else (cpu_after - cpu_before) * 1000 / report.requests
        )
        step = Step(label, rate, report, cpu)
        steps.append(step)
        say(step_row(step), *failure_lines(step))
    return steps


def _targets(url: str, api_key: str | None, options: RestOptions, count: int) -> Iterator[Target]:
    headers = {"Content-Type": "application/json", "Prefer": f"wait={options.wait_s}"}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    run = uuid.uuid4().hex[:8]
    for n in range(count):
        body = payment_body(f"bench-{run}-{n}")
        yield Target("POST", f"{url}/v1/payments", headers, json.dumps(body).encode())
