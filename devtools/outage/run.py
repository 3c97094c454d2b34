"""One outage run, start to verdict. The timeline is the point:

1. a broker (``KAFKA_BOOTSTRAP_SERVERS``, else one of its own), the sandbox acquirer, one
   ``paygate consumer`` process with the settings as shipped (or as the environment's
   ``PAYGATE_*`` says), only the reconciliation windows shortened;
2. payments fed at a steady rate, for ``before_s``, then the acquirer taken down for
   ``outage_s`` (SIGKILL by default), then back on the same port and ledger, and fed for
   ``after_s`` more;
3. wait (bounded) until every payment is final; read the store, the acquirer's ledger and
   the consumer's metrics; SIGTERM the consumer; judge;
4. stop the acquirer and the broker, whatever happened before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from devtools.chaos.consumer_pool import ConsumerPool
from devtools.chaos.evidence import count_final, read_ledger, read_statuses
from devtools.chaos.harness import child_environment
from devtools.chaos.report import Verdict
from devtools.kafka import LocalKafka
from devtools.outage.acquirer import Acquirer
from devtools.outage.evidence import (
    ConsumerCounts,
    last_final_write,
    read_failures,
    scrape_consumer,
    wait_all_final,
)
from devtools.outage.feed import SteadyFeeder, order_prefix, steady_plan
from devtools.outage.options import OutageOptions
from devtools.outage.verdict import OutageFacts, judge
from devtools.verdict_run import run_in_work_dir
from paygate.kafka_security import kafka_client_options
from paygate.settings import Settings
from paygate.topics import ensure_topics
from persistence.engine import create_engine
from schemas.payments import PaymentMessages

log = logging.getLogger("devtools.outage")


def outage_settings(
    base: Settings,
    *,
    bootstrap: str,
    run_id: str,
    database_url: str,
    sandbox_url: str,
    metrics_port: int,
) -> Settings:
    """The consumer's settings: ``base`` (retry budget, circuit breaker and all) with its
    own topics and store, and reconciliation windows short enough for a run.

    The abandonment window (30 s) stays above the longest an attempt waits in back-off
    (a 2 s call plus a 10 s back-off by default), so the reconciler never fails a payment
    that is only waiting for its next try.
    """
    updates = {
        # A test bench of its own, against the sandbox acquirer: development mode.
        "env": "development",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "commands_topic": f"outage.{run_id}.commands",
        "results_topic": f"outage.{run_id}.results",
        "dlq_topic": f"outage.{run_id}.commands.dlq",
        "consumer_group": f"outage-{run_id}",
        "database_url": database_url,
        "provider": "sandbox",
        "routes": {},
        "sandbox_url": sandbox_url,
        "provider_timeout_s": 2.0,
        "reconcile_min_age_s": 3.0,
        "reconcile_interval_s": 1.0,
        "abandon_after_s": 30.0,
        # A killed call's payment moves on within the run (above the 2 s call timeout).
        "claim_lease_s": 4.0,
        "metrics_host": "127.0.0.1",
        "metrics_port": metrics_port,
    }
    fields = base.model_dump(exclude={"kafka_bootstrap_servers"})
    return Settings.model_validate({**fields, **updates})


async def run_outage(options: OutageOptions, base: Settings, command_line: str) -> int:
    """The whole run; prints the table and returns 0 (pass) or 1 (a check failed)."""
    started = time.monotonic()
    return await run_in_work_dir(
        options,
        command_line,
        "paygate-outage-",
        lambda work_dir: _run(options, base, uuid.uuid4().hex[:10], work_dir, started),
    )


async def _run(
    options: OutageOptions, base: Settings, run_id: str, work_dir: Path, started: float
) -> Verdict:
    cleanup = contextlib.AsyncExitStack()  # unwound in reverse: consumer, acquirer, broker
    try:
        bootstrap = base.kafka_bootstrap_servers
        if not bootstrap:
            kafka = LocalKafka(work_dir=work_dir / "kafka")
            cleanup.push_async_callback(asyncio.to_thread, kafka.stop)
            log.info("starting a local Kafka broker")
            bootstrap = await asyncio.to_thread(kafka.start)
        acquirer = Acquirer(ledger=work_dir / "ledger.db", log_path=work_dir / "acquirer.log")
        cleanup.push_async_callback(acquirer.stop)
        sandbox_url = await acquirer.start()
        metrics_port = _free_port()
        settings = outage_settings(
            base,
            bootstrap=bootstrap,
            run_id=run_id,
            database_url=f"sqlite+aiosqlite:///{work_dir / 'paygate.db'}",
            sandbox_url=sandbox_url,
            metrics_port=metrics_port,
        )
        await ensure_topics(settings)
        _print_policy(settings)
        pool = ConsumerPool(child_environment(settings), work_dir, 1)
        cleanup.push_async_callback(pool.stop_all)
        await pool.start()
        engine = create_engine(settings.database_url)
        cleanup.push_async_callback(engine.dispose)

        plan = steady_plan(
            count=max(1, round(options.rate * options.feed_s)),
            run_id=run_id,
            messages=PaymentMessages.bundled(),
        )
        ids = [payment.payment_id for payment in plan]
        prefix = order_prefix(run_id)
        feeder = SteadyFeeder(
            kafka_client_options(settings), settings.commands_topic, plan, options.rate
        )
        log.info("feeding %d payments over %.0f s", len(ids), options.feed_s)
        feed = asyncio.create_task(feeder.run(), name="feed")
        cleanup.push_async_callback(_cancel, feed)

        await asyncio.sleep(options.before_s)
        await acquirer.take_down(options.signal)
        down_at = time.monotonic()
        log.info("acquirer down (SIG%s) for %.0f s", options.signal.upper(), options.outage_s)
        await asyncio.sleep(options.outage_s)
        await acquirer.start()
        back_at, back_wall = time.monotonic(), datetime.now(UTC)
        fed_before_return = ids[: feeder.sent]
        backlog = len(fed_before_return) - await count_final(engine, prefix)
        log.info("acquirer back after %.1f s; %d payments not final", back_at - down_at, backlog)

        await feed
        drained = await wait_all_final(engine, prefix, len(ids), options.drain_timeout_s)
        failures = await read_failures(engine, ids)
        # The cut ones are final only once the reconciler gives up on them
        # (PAYGATE_ABANDON_AFTER_S): that is not the backlog draining.
        cut = {failure.payment_id for failure in failures if failure.cut_at_the_kill}
        backlog_ids = [pid for pid in fed_before_return if pid not in cut]
        last = await last_final_write(engine, backlog_ids) if drained else None
        counts = await _scrape(metrics_port)
        exit_codes = await pool.stop_all()
        return judge(
            OutageFacts(
                payment_ids=ids,
                statuses=await read_statuses(engine, ids),
                failures=failures,
                ledger=await read_ledger(acquirer.url),
                down_s=back_at - down_at,
                backlog_at_return=backlog,
                drain_s=None if last is None else max(0.0, (last - back_wall).total_seconds()),
                counts=counts,
                consumer_exit_codes=exit_codes,
                wall_s=time.monotonic() - started,
            )
        )
    finally:
        await cleanup.aclose()


async def _scrape(port: int) -> ConsumerCounts | None:
    try:
        return await scrape_consumer(f"http://127.0.0.1:{port}/metrics")
    except Exception:  # the figures are extra: their absence must not hide the verdict
        log.exception("could not read the consumer's metrics")
        return None


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _free_port() -> int:
    # Racy in theory (another process may take it before the consumer binds it); the
    # consumer then fails to start and the run says so.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _print_policy(settings: Settings) -> None:
    attempts = settings.provider_max_attempts
    print(
        "consumer: retry budget "
        f"{settings.provider_retry_budget_s:g} s, max attempts "
        f"{'unset' if attempts is None else attempts}, back-off "
        f"{settings.retry_base_delay_s:g}-{settings.retry_max_delay_s:g} s, circuit "
        + (
            "off"
            if settings.circuit_failure_threshold == 0
            else f"{settings.circuit_failure_threshold} failures / {settings.circuit_open_s:g} s"
        ),
        flush=True,
    )
