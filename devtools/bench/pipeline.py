"""Cases b and c: the real consumer service, timed by what reaches the results topic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from devtools.bench.environment import BenchError
from devtools.bench.provider import BenchProvider
from devtools.bench.report import CaseResult, ConcurrencyBound
from devtools.bench.result_counter import ResultCounter
from paygate.consumer_service import ConsumerService
from paygate.kafka_security import kafka_client_options
from paygate.settings import Settings
from providers.registry import Providers
from providers.routing import Router
from telemetry.metrics import Metrics

log = logging.getLogger("devtools.bench")

# The runner finishes the batch in hand before it stops: with a slow provider that can be
# a whole batch of slow calls, so this is generous; past it the service is cancelled.
_SHUTDOWN_TIMEOUT_S = 90.0


def concurrency_bound(settings: Settings, delay_s: float) -> ConcurrencyBound:
    """How many provider calls the pipeline may have in flight, and why that many.

    The consumer gates its provider calls at ``max_provider_calls``; the runner admits
    ``max_in_flight`` commands, and a command in a database write holds no provider call,
    so the lower of the two bounds the calls in flight. Read by name, so the bench also
    measures revisions from before the gate (where only ``max_in_flight`` bounds them).
    """
    gate = getattr(settings, "max_provider_calls", None)
    if gate is None:
        return ConcurrencyBound(
            in_flight=settings.max_in_flight,
            delay_s=delay_s,
            reason=f"Settings.max_in_flight={settings.max_in_flight} (no provider-call gate)",
        )
    return ConcurrencyBound(
        in_flight=min(int(gate), settings.max_in_flight),
        delay_s=delay_s,
        reason=f"Settings.max_provider_calls={gate}, max_in_flight={settings.max_in_flight}",
    )


async def run_pipeline(
    settings: Settings,
    *,
    case: str,
    title: str,
    payments: int,
    provider: BenchProvider,
    stall_timeout_s: float,
) -> CaseResult:
    """Run :class:`ConsumerService` until ``payments`` results are on the results topic.

    The clock runs from the provider's first call (so engine setup and the group join are
    not timed, as in case a) to the moment the reader has seen the last result.
    """
    metrics = Metrics()
    counter = ResultCounter(kafka_client_options(settings), settings.results_topic)
    await counter.start()
    stop = asyncio.Event()
    service_started = time.perf_counter()
    service = asyncio.create_task(
        ConsumerService(
            settings, Providers.of(provider), metrics, Router.catch_all(provider.name)
        ).run(stop),
        name=f"bench-{case}-consumer",
    )
    try:
        done_at = await counter.wait_for(
            payments,
            stall_timeout_s=stall_timeout_s,
            service=service,
            progress=lambda: _progress(provider, metrics),
        )
        done_cpu = time.process_time()
    finally:
        stop.set()
        failure = await _stop(service)
        await counter.stop()
    if failure is not None:
        raise BenchError(f"case {case}: the consumer service failed on stopping") from failure
    first, last = provider.first_call_at, provider.last_return_at
    if first is None or last is None:
        raise BenchError(f"case {case}: results arrived but the provider was never called")
    return CaseResult(
        case=case,
        title=title,
        payments=payments,
        elapsed_s=done_at - first,
        cpu_s=None if provider.first_call_cpu is None else done_cpu - provider.first_call_cpu,
        details=(
            f"not timed: service start to first provider call {first - service_started:.2f} s "
            "(engine, schema, group join)",
            f"last provider call returned at +{last - first:.3f} s, "
            f"last result on the topic at +{done_at - first:.3f} s",
            f"provider calls {provider.calls}, most in flight at once {provider.max_in_flight}",
        ),
    )


async def _stop(service: asyncio.Task[None]) -> BaseException | None:
    """Wait (bounded) for the service to stop; return what it failed with, if anything."""
    done, _ = await asyncio.wait({service}, timeout=_SHUTDOWN_TIMEOUT_S)
    if not done:
        log.warning("consumer service did not stop within %.0f s; cancelling", _SHUTDOWN_TIMEOUT_S)
        service.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await service
        return None
    return None if service.cancelled() else service.exception()


def _progress(provider: BenchProvider, metrics: Metrics) -> str:
    counts = [
        f"{sample.name}{sorted(sample.labels.values())}={sample.value:g}"
        for family in metrics.registry.collect()
        if family.name in ("paygate_commands_consumed", "paygate_dead_lettered")
        for sample in family.samples
        if sample.name.endswith("_total")
    ]
    return f"provider calls {provider.calls}; " + (", ".join(counts) or "nothing consumed")
