"""Runs the chosen cases one after another on one broker and prints the report."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import sys
import time
import uuid
from collections.abc import Sequence

from devtools.bench.bare_loop import run_bare_loop
from devtools.bench.baseline import comparison_lines, figures, run_baseline
from devtools.bench.command import bench_exit_code, say
from devtools.bench.environment import (
    broker,
    case_database,
    describe_database,
    describe_load,
    describe_machine,
    describe_revision,
)
from devtools.bench.options import BenchOptions, parse_options
from devtools.bench.pipeline import concurrency_bound, run_pipeline
from devtools.bench.provider import BenchProvider
from devtools.bench.report import B_NORMAL, B_TOKENS, CaseResult, case_lines, summary_lines
from devtools.bench.scale_out import ScaleStep, run_scale_step, scale_lines, scale_summary
from devtools.bench.workload import (
    CaseTopics,
    created_topics,
    produce_commands,
    vaulted_accounts,
)
from paygate.event_loop import use_event_loop
from paygate.kafka_security import kafka_client_options
from paygate.settings import Settings
from persistence.engine import SqliteSynchronous


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    options = parse_options(args)
    # Warnings and errors only: the pipeline logs a line per payment at INFO, which would
    # drown the report (and is not what is being measured).
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    command = shlex.join(["python", "-m", "devtools.bench", *args])
    # The pipeline runs in this process, so this loop is the one the consumer would run on.
    use_event_loop(options.event_loop)
    return bench_exit_code(run_bench(options, command, args))


async def run_bench(options: BenchOptions, command: str, argv: Sequence[str] = ()) -> None:
    # The bench plays upstream producers that send clear numbers (case b), which only
    # development accepts; the consumer vaults them at first read, as it would there.
    base = Settings().model_copy(update={"accept_clear_account_numbers": True})
    say(
        f"command: {command}",
        f"machine: {describe_machine()}",
        f"load average at start: {describe_load()}",
        f"interpreter: {sys.executable}",
        f"event loop: {options.event_loop.value} ({type(asyncio.get_running_loop()).__name__})",
        f"revision: {describe_revision()}",
        f"cases: {','.join(options.cases)}",
        f"payments: {options.payments} for cases a and b, {options.slow_payments} for case c "
        f"(provider delay {options.provider_delay_s:g} s)",
        f"partitions: {options.partitions} per topic",
        f"database: {describe_database(options.database_url)}",
        *(
            ["sqlite synchronous: case b with FULL, then case b-normal with NORMAL"]
            if options.compare_sqlite_synchronous
            else []
        ),
        *(
            ["accounts: case b by clear number, then case b-tokens by vault token"]
            if options.compare_tokens
            else []
        ),
    )
    async with broker(base.kafka_bootstrap_servers) as kafka:
        say(f"broker: {kafka.description}", "")
        baseline: list[str] = []
        if options.baseline is not None:
            extra = (
                []
                if options.baseline_event_loop is None
                else ["--event-loop", options.baseline_event_loop.value]
            )
            baseline = await run_baseline(options.baseline, argv, kafka.bootstrap_servers, extra)
        settings = base.model_copy(update={"kafka_bootstrap_servers": kafka.bootstrap_servers})
        run_id = uuid.uuid4().hex[:8]
        results: dict[str, CaseResult] = {}
        for case in _run_order(options):
            results[case] = await _run_case(case, settings, options, run_id)
            say(*case_lines(results[case]), "")
        bound = concurrency_bound(settings, options.provider_delay_s) if "c" in results else None
        summary = summary_lines(results, bound)
        say(*summary)
        if options.baseline is not None:
            say(*comparison_lines(figures(baseline), figures(summary)))
        if options.scale_out:
            await _scale_out(settings, options, run_id)
        say("", f"load average at end: {describe_load()}")


async def _scale_out(settings: Settings, options: BenchOptions, run_id: str) -> None:
    assert options.database_url is not None  # parse_options requires it
    cores = os.cpu_count() or 0
    # Enough partitions for the most processes of the run, the same for every step.
    partitions = max(options.partitions, *options.scale_out)
    step_settings = settings.model_copy(
        update={"database_url": options.database_url, "topic_partitions": partitions}
    )
    say(
        "",
        f"scale-out: {','.join(map(str, options.scale_out))} consumer processes, "
        f"{options.payments} payments each, {partitions} partitions, machine {cores} cores",
    )
    steps: list[ScaleStep] = []
    for index, processes in enumerate(options.scale_out, start=1):
        step = await run_scale_step(
            step_settings,
            run_id=run_id,
            index=index,
            processes=processes,
            payments=options.payments,
            stall_timeout_s=options.stall_timeout_s,
        )
        steps.append(step)
        say(*scale_lines(step, cores), f"  load average after the step: {describe_load()}", "")
    say(*scale_summary(steps, cores))


def _run_order(options: BenchOptions) -> list[str]:
    """The cases in order; b-normal right after b, so the two run on the same warm broker."""
    order: list[str] = []
    for case in options.cases:
        order.append(case)
        if case == "b" and options.compare_sqlite_synchronous:
            order.append(B_NORMAL)
        if case == "b" and options.compare_tokens:
            order.append(B_TOKENS)
    return order


def _synchronous(case: str, settings: Settings, options: BenchOptions) -> SqliteSynchronous:
    """What case b (or b-normal) runs with: as configured, unless it is a comparison."""
    if case == B_NORMAL:
        return SqliteSynchronous.NORMAL
    if options.compare_sqlite_synchronous:
        return SqliteSynchronous.FULL
    return settings.sqlite_synchronous


async def _run_case(
    case: str, settings: Settings, options: BenchOptions, run_id: str
) -> CaseResult:
    payments = options.slow_payments if case == "c" else options.payments
    topics = CaseTopics.fresh(run_id, case)
    case_settings = topics.settings(settings, options.partitions)
    async with created_topics(case_settings):
        with case_database(options.database_url, case) as db_url:
            return await _run_on(
                case,
                case_settings.model_copy(update={"database_url": db_url}),
                options,
                topics,
                payments,
                run_id,
            )


async def _run_on(
    case: str,
    settings: Settings,
    options: BenchOptions,
    topics: CaseTopics,
    payments: int,
    run_id: str,
) -> CaseResult:
    """One case on its topics and database (``settings.database_url``)."""
    kafka = kafka_client_options(settings)
    accounts = None
    if case == B_TOKENS:
        # Tokenized before the clock starts, as clients that tokenized first would.
        accounts = await vaulted_accounts(settings, payments)
    produce_started = time.perf_counter()
    await produce_commands(kafka, topics.commands, payments, f"bench-{run_id}-{case}", accounts)
    say(
        f"case {case}: {payments} commands pre-produced to {topics.commands} in "
        f"{time.perf_counter() - produce_started:.1f} s (not timed); running ..."
    )
    if case == "a":
        return await run_bare_loop(kafka, topics, payments, options.stall_timeout_s)
    slow = case == "c"
    provider = BenchProvider(delay_s=options.provider_delay_s if slow else 0.0)
    synchronous = _synchronous(case, settings, options)
    title = (
        f"pipeline, provider sleeping {options.provider_delay_s:g} s per call"
        if slow
        else "pipeline (ConsumerService), provider answering at once"
    )
    if case in ("b", B_TOKENS) and options.compare_tokens:
        title += ", accounts by vault token" if case == B_TOKENS else ", accounts by number"
    if settings.database_url.startswith("sqlite"):
        title += f", SQLite synchronous={synchronous.value.upper()}"
    return await run_pipeline(
        settings.model_copy(update={"sqlite_synchronous": synchronous}),
        case=case,
        title=title,
        payments=payments,
        provider=provider,
        stall_timeout_s=options.stall_timeout_s,
    )
