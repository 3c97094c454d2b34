"""Scale-out: the pipeline with 1, 2, 4 ... consumer processes in one group, side by side.

Each step gets fresh topics and a fresh group on the given PostgreSQL database. Its
commands are encoded before anything starts (so encoding them does not compete with the
consumers for CPU); its N processes (``devtools.bench.scale_worker``, each a
:class:`~paygate.consumer_service.ConsumerService` with the instant provider) are started
and the group is waited for until it is stable with N members; only then are the commands
produced. The clock runs from the first provider call in any process to the moment a
separate reader has seen every result, as in case b. The processes' CPU is summed, so the
report says how many of the machine's cores the step kept busy: that, beside the rate,
says what limits it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from devtools.bench.environment import BenchError
from devtools.bench.result_counter import ResultCounter
from devtools.bench.workload import CaseTopics, created_topics, encoded_commands, produce_encoded
from paygate.kafka_security import kafka_client_options
from paygate.settings import Settings

# The group must settle within this; joining takes a few seconds on a loaded machine.
_GROUP_TIMEOUT_S = 120.0
# The workers finish the batch in hand and drain their relay before they exit.
_STOP_TIMEOUT_S = 90.0


@dataclass(frozen=True, slots=True)
class ScaleStep:
    processes: int
    payments: int
    elapsed_s: float
    cpu_s: float | None
    calls: tuple[int, ...]
    produce_s: float

    @property
    def rate(self) -> float:
        return self.payments / self.elapsed_s


async def run_scale_step(
    settings: Settings,
    *,
    run_id: str,
    index: int,
    processes: int,
    payments: int,
    stall_timeout_s: float,
) -> ScaleStep:
    """Run ``processes`` consumer processes over ``payments`` fresh commands.

    ``index`` (the step's place in the run) keeps topics, group and order ids apart when a
    run repeats a number of processes: a repeated order id would be a replay, not a payment.
    """
    name = f"x{processes}-{index}"
    topics = CaseTopics.fresh(run_id, name)
    step = topics.settings(settings, settings.topic_partitions)
    kafka = kafka_client_options(step)
    encoded = encoded_commands(payments, f"bench-{run_id}-{name}")
    overrides = {
        "commands_topic": step.commands_topic,
        "results_topic": step.results_topic,
        "dlq_topic": step.dlq_topic,
        "consumer_group": step.consumer_group,
        "topic_partitions": step.topic_partitions,
        "database_url": step.database_url,
        "kafka_bootstrap_servers": step.kafka_bootstrap_servers,
    }
    async with created_topics(step):
        counter = ResultCounter(kafka, step.results_topic)
        await counter.start()
        workers = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "devtools.bench.scale_worker",
                json.dumps(overrides),
                stdout=asyncio.subprocess.PIPE,
            )
            for _ in range(processes)
        ]
        reports: list[dict[str, Any]] = []
        try:
            await _group_stable(kafka, step.consumer_group, processes)
            produce_started = time.perf_counter()
            await produce_encoded(kafka, step.commands_topic, encoded)
            produce_s = time.perf_counter() - produce_started
            exited = asyncio.create_task(_first_exit(workers))
            try:
                await counter.wait_for(
                    payments,
                    stall_timeout_s=stall_timeout_s,
                    service=exited,
                    progress=lambda: f"{counter.seen} results seen",
                )
                done_wall = time.time()
            finally:
                exited.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await exited
        finally:
            reports = await _stop(workers)
            await counter.stop()
    firsts = [r["first_call_wall"] for r in reports if r.get("first_call_wall") is not None]
    if not firsts:
        raise BenchError(f"scale-out {processes}: no process called the provider")
    cpus = [r.get("cpu_s") for r in reports]
    return ScaleStep(
        processes=processes,
        payments=payments,
        elapsed_s=done_wall - min(firsts),
        cpu_s=None if None in cpus else sum(float(c) for c in cpus if c is not None),
        calls=tuple(int(r.get("calls", 0)) for r in reports),
        produce_s=produce_s,
    )


async def _group_stable(kafka: Mapping[str, object], group: str, members: int) -> None:
    """Wait until ``group`` is Stable with ``members`` members (bounded; no fixed sleep)."""
    admin = AIOKafkaAdminClient(**kafka)
    await admin.start()
    try:
        deadline = time.monotonic() + _GROUP_TIMEOUT_S
        seen = "nothing"
        while time.monotonic() < deadline:
            # DescribeGroups answers (error, group, state, protocol type, protocol, members,
            # ...) per group.
            described = await admin.describe_consumer_groups([group])
            state, joined = described[0].groups[0][2], described[0].groups[0][5]
            seen = f"{state} with {len(joined)} members"
            if state == "Stable" and len(joined) == members:
                return
            await asyncio.sleep(0.2)  # polling a remote state, bounded by the deadline
    finally:
        await admin.close()
    raise BenchError(f"group {group} not stable with {members} members: {seen}")


async def _first_exit(workers: list[asyncio.subprocess.Process]) -> None:
    """Return when any worker exits: before the end, that is a failure."""
    await asyncio.wait(
        [asyncio.create_task(worker.wait()) for worker in workers],
        return_when=asyncio.FIRST_COMPLETED,
    )


async def _stop(workers: list[asyncio.subprocess.Process]) -> list[dict[str, Any]]:
    """SIGTERM every worker, collect each one's report line; kill what does not stop."""
    for worker in workers:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
    reports: list[dict[str, Any]] = []
    for worker in workers:
        try:
            out, _ = await asyncio.wait_for(worker.communicate(), _STOP_TIMEOUT_S)
        except TimeoutError:
            worker.kill()
            await worker.wait()
            continue
        lines = out.decode().strip().splitlines()
        if worker.returncode == 0 and lines:
            reports.append(json.loads(lines[-1]))
    return reports


def scale_lines(step: ScaleStep, cores: int) -> list[str]:
    lines = [
        f"scale-out {step.processes}: {step.processes} consumer process(es) in one group",
        f"  {step.payments} payments in {step.elapsed_s:.3f} s = {step.rate:.1f} payments/s",
        f"  provider calls per process {list(step.calls)}",
        f"  commands produced in {step.produce_s:.1f} s after the group was stable",
    ]
    if step.cpu_s is not None:
        lines.append(
            f"  consumers' CPU {step.cpu_s:.3f} s = {step.cpu_s / step.payments * 1e6:.0f} us "
            f"per payment, {step.cpu_s / step.elapsed_s:.2f} of {cores} cores busy on average"
        )
    return lines


def scale_summary(steps: list[ScaleStep], cores: int) -> list[str]:
    if not steps:
        return []
    base = steps[0].rate
    lines = ["", f"scale-out on {cores} cores (PostgreSQL, instant provider)"]
    for step in steps:
        busy = "n/a" if step.cpu_s is None else f"{step.cpu_s / step.elapsed_s:.2f}"
        lines.append(
            f"scale {step.processes}: {step.rate:.1f} payments/s, "
            f"{step.rate / base:.2f} x {steps[0].processes} process(es), cores busy {busy}"
        )
    return lines
