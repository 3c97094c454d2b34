"""``python -m devtools.bench hops``: where a create-and-wait's time goes, hop by hop.

Each stack (the ``--baseline`` checkout's first, when given, then this checkout's) is
paygate as production runs it (:func:`devtools.bench.rest_stack.paygate_stack`). The
client sends a few warm-up payments, then ``--count`` more at ``--rate``, open loop
(:mod:`devtools.bench.hop_load`). Once every answer is in, and before the stack stops
(a PostgreSQL stack's database goes with it), the marks the system recorded anyway are
read back: the command and result records' Kafka timestamps and the payment rows'
``created_at``/``updated_at``. Each answered request's latency is then cut at those marks
(:mod:`devtools.bench.hop_timeline`) and every hop's percentiles printed. Nothing in
paygate is instrumented for it, and timing is never asserted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import shlex
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devtools.bench.command import bench_exit_code, say
from devtools.bench.environment import (
    broker,
    describe_machine,
    describe_revision,
    revision_of,
    uptime,
)
from devtools.bench.hop_load import NO_ANSWER, Answer, open_loop
from devtools.bench.hop_options import HopOptions, parse_hop_options
from devtools.bench.hop_records import command_times, result_times
from devtools.bench.hop_report import comparison_lines, percentile, table_lines
from devtools.bench.hop_rows import payment_times
from devtools.bench.hop_timeline import HOPS, TOTAL, Timeline, hop_samples, timelines
from devtools.bench.rest_stack import (
    RunningStack,
    StackSpec,
    describe_stack_database,
    paygate_stack,
)
from paygate.settings import Settings

THIS_CHECKOUT = "this checkout"


def main(argv: Sequence[str]) -> int:
    options = parse_hop_options(argv)
    command = shlex.join(["python", "-m", "devtools.bench", "hops", *argv])
    return bench_exit_code(run_hop_bench(options, command))


@dataclass(frozen=True, slots=True)
class StackHops:
    label: str
    samples_ms: dict[str, list[float]]


async def run_hop_bench(options: HopOptions, command: str) -> list[StackHops]:
    """Measure every stack, printing its table as it is measured; return the samples."""
    say(
        f"command: {command}",
        f"machine: {describe_machine()}",
        f"interpreter: {sys.executable}",
        f"revision: {describe_revision()}",
        f"load: POST /v1/payments, Prefer: wait={options.wait_s}, a new order per request, "
        f"{options.rate_per_s:g}/s open loop (each request in a task of its own, started on "
        f"schedule), {options.count} reported after {options.warmup} warm-up requests, "
        f"client timeout {options.timeout_s:g} s",
        "provider: sandbox-inprocess; facade and consumer in separate processes",
        f"database: {describe_stack_database(options.database_url)}",
        "clocks: one machine's; Kafka record timestamps in ms (CreateTime, stamped as the "
        "producer takes the record), the store's in us",
        f"uptime at start: {uptime()}",
    )
    specs: list[StackSpec] = []
    if options.baseline is not None:
        label = f"baseline {revision_of(options.baseline)}"
        specs.append(StackSpec(label, checkout=options.baseline))
    specs.append(StackSpec(THIS_CHECKOUT))
    measured: list[StackHops] = []
    with tempfile.TemporaryDirectory(prefix="paygate-bench-hops-") as tmp:
        async with broker(Settings().kafka_bootstrap_servers) as kafka:
            say(f"broker: {kafka.description}")
            for index, spec in enumerate(specs):
                stack_dir = Path(tmp) / f"stack-{index}"
                async with paygate_stack(
                    spec, kafka.bootstrap_servers, options.database_url, stack_dir
                ) as stack:
                    measured.append(await _measure(spec.label, stack, options))
    say("", f"uptime at end: {uptime()}")
    if len(measured) == 2:
        baseline, current = measured
        say(*comparison_lines(baseline.samples_ms, current.samples_ms, current.label))
    return measured


async def _measure(label: str, stack: RunningStack, options: HopOptions) -> StackHops:
    """Warm up, drive, read the marks back (the stack still up) and print the table."""
    say("", f"{label}: {stack.url}, uptime {uptime()}")
    run_id = f"hops-{uuid.uuid4().hex[:8]}"
    drive = functools.partial(
        open_loop,
        stack.url,
        stack.api_key,
        rate_per_s=options.rate_per_s,
        wait_s=options.wait_s,
        timeout_s=options.timeout_s,
    )
    if options.warmup:
        await drive(run_id=f"{run_id}-w", count=options.warmup)
    answers = await drive(run_id=run_id, count=options.count)
    settings = stack.settings
    commands = await command_times(settings)
    results = await result_times(settings)
    rows = await payment_times(settings.database_url)
    completed = [a for a in answers if a.completed]
    found, missing = timelines(
        ((a.order_id, a.sent, a.answered) for a in completed), commands, rows, results
    )
    samples = hop_samples(found.values())
    if options.marks is not None:
        await asyncio.to_thread(_write_marks, options.marks, label, found)
    say(
        f"{label}: {len(answers)} requests, {len(completed)} answered 200, "
        f"{len(found)} with every mark; the client started them at most "
        f"{max(a.start_lag_s for a in answers) * 1000:.1f} ms late",
        *_failure_lines(answers, missing),
        *table_lines(samples),
        *_medians_line(samples),
    )
    return StackHops(label, samples)


def _write_marks(path: Path, label: str, found: Mapping[str, Timeline]) -> None:
    """Append a JSON line per request: its stack, its order and its marks by name."""
    with path.open("a", encoding="utf-8") as out:
        for order_id, timeline in found.items():
            line = {"stack": label, "order_id": order_id, **dataclasses.asdict(timeline)}
            out.write(json.dumps(line) + "\n")


def _failure_lines(answers: Sequence[Answer], missing: Sequence[str]) -> list[str]:
    lines = []
    statuses = Counter(
        "no answer" if a.http_status == NO_ANSWER else str(a.http_status)
        for a in answers
        if not a.completed
    )
    if statuses:
        shown = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items()))
        lines.append(f"  not answered 200 (left out of the hops): {shown}")
    if missing:
        lines.append(
            f"  answered 200 but a mark not found (left out): {len(missing)}, "
            f"e.g. order {missing[0]}"
        )
    return lines


def _medians_line(samples_ms: dict[str, list[float]]) -> list[str]:
    """The hops' p50s added up, beside the total's p50. Medians do not add up (each may be
    another request's): the gap says how far the p50 column may be read as a budget."""
    if not samples_ms[TOTAL]:
        return []
    added = sum(percentile(samples_ms[name], 50) for name, _ in HOPS)
    total = percentile(samples_ms[TOTAL], 50)
    return [f"sum of the hops' p50: {added:.1f} ms; p50 of the total: {total:.1f} ms"]
