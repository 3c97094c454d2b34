"""One chaos run, start to verdict. The order of the phases is the point:

1. broker (ours, unless ``KAFKA_BOOTSTRAP_SERVERS`` names one), topics, acquirer, consumers;
2. feed, while consumers are SIGKILLed and replaced, and the broker restarts once;
3. drain: no more faults; every payment final (reconciling the in-doubt), outbox empty;
4. SIGTERM the consumers (they must exit 0), then read the evidence and judge it;
5. stop the acquirer and the broker, whatever happened before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from paygate.chaos.consumer_pool import ConsumerPool
from paygate.chaos.drain import DrainReport, drain
from paygate.chaos.evidence import count_final, read_ledger, read_results, read_statuses
from paygate.chaos.faults import BrokerControl, kill_consumers, supervise
from paygate.chaos.feeder import Feeder, FeedPlan, build_plan, order_prefix
from paygate.chaos.group_probe import GroupProbe
from paygate.chaos.harness import child_environment, start_acquirer
from paygate.chaos.options import ChaosOptions
from paygate.chaos.refund_evidence import read_store_refunds
from paygate.chaos.refund_verdict import RefundFacts
from paygate.chaos.verdict import RunFacts, Verdict, judge
from paygate.kafka import LocalKafka
from paygate.kafka_security import kafka_client_options
from paygate.settings import Settings
from paygate.topics import ensure_topics
from persistence.engine import create_engine
from schemas.payments import PaymentMessages

log = logging.getLogger("paygate.chaos")


def chaos_settings(
    base: Settings, *, bootstrap: str, run_id: str, database_url: str, sandbox_url: str
) -> Settings:
    """The consumers' settings: short windows, so in-doubt payments resolve within the run.

    The validators' rules hold: min age 2 s > provider timeout 1 s, abandon 30 s > 2 x 2 s,
    claim lease 3 s > provider timeout 1 s.
    """
    updates = {
        # A test bench of its own: the sandbox acquirer, throwaway topics and store.
        "env": "development",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "commands_topic": f"chaos.{run_id}.commands",
        "results_topic": f"chaos.{run_id}.results",
        "dlq_topic": f"chaos.{run_id}.commands.dlq",
        "consumer_group": f"chaos-{run_id}",
        "database_url": database_url,
        "provider": "sandbox",
        "sandbox_url": sandbox_url,
        "provider_timeout_s": 1.0,
        "reconcile_min_age_s": 2.0,
        "reconcile_interval_s": 1.0,
        "abandon_after_s": 30.0,
        # A killed consumer's claims must expire within the run (above the provider timeout,
        # so a live owner is not replaced mid-call), and closed keys verified by its end.
        "claim_lease_s": 3.0,
        "stray_settle_s": 5.0,
        "metrics_port": 0,
    }
    fields = base.model_dump(exclude={"kafka_bootstrap_servers"})
    # Validated again, so a bad base setting (or a bad window above) fails here, loudly.
    return Settings.model_validate({**fields, **updates})


async def run_chaos(options: ChaosOptions, base: Settings, command_line: str) -> int:
    """The whole run; prints the table and returns 0 (pass) or 1 (a check failed)."""
    started = time.monotonic()
    run_id = uuid.uuid4().hex[:10]  # unique names; the seed fixes everything else
    work_dir = options.work_dir or Path(tempfile.mkdtemp(prefix="paygate-chaos-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    print(f"command: {command_line}", flush=True)
    print(f"options: {_describe(options)}", flush=True)
    print(f"work dir: {work_dir}", flush=True)
    verdict: Verdict | None = None
    try:
        verdict = await _run(options, base, run_id, work_dir, started)
    finally:
        temporary = options.work_dir is None and not options.keep_work_dir
        if verdict is not None and verdict.passed and temporary:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            print(f"logs kept in {work_dir}", flush=True)
    print(flush=True)
    print(verdict.render(), flush=True)
    return 0 if verdict.passed else 1


async def _run(
    options: ChaosOptions, base: Settings, run_id: str, work_dir: Path, started: float
) -> Verdict:
    cleanup = contextlib.AsyncExitStack()  # unwound in reverse: consumers, acquirer, broker
    try:
        broker: BrokerControl | None = None
        external = None if options.own_broker else base.kafka_bootstrap_servers
        if external:
            bootstrap = external
            log.info("using the broker at %s; the broker restart is skipped", bootstrap)
        else:
            broker = BrokerControl(LocalKafka(work_dir=work_dir / "kafka"))
            cleanup.push_async_callback(broker.stop)
            log.info("starting a local Kafka broker")
            bootstrap = await broker.start()
        acquirer, sandbox_url = await start_acquirer(options, work_dir)
        cleanup.push_async_callback(acquirer.terminate)
        settings = chaos_settings(
            base,
            bootstrap=bootstrap,
            run_id=run_id,
            database_url=options.database_url or f"sqlite+aiosqlite:///{work_dir / 'paygate.db'}",
            sandbox_url=sandbox_url,
        )
        await ensure_topics(settings)
        print(f"topics: {settings.commands_topic}, {settings.results_topic}", flush=True)

        pool = ConsumerPool(child_environment(settings), work_dir, options.consumers)
        cleanup.push_async_callback(pool.stop_all)
        await pool.start()
        log.info("consumers ready: %s", ", ".join(pool.names))
        # Crashed consumers are replaced through the feed and the drain, as a supervisor
        # (systemd, Kubernetes) would; the kills stop with the feed.
        stop_supervising = asyncio.Event()
        supervisor = asyncio.create_task(supervise(pool, stop_supervising), name="supervise")
        cleanup.push_async_callback(_stop_task, supervisor, stop_supervising)

        plan = _plan(options, run_id)
        log.info(
            "feeding %d payments and %d refunds (+%d duplicates)",
            len(plan.payments),
            len(plan.refunds),
            plan.duplicates,
        )
        final_at_calm = await _chaos_phase(
            options, settings, plan, pool, broker, order_prefix(run_id)
        )
        ids = [payment.payment_id for payment in plan.payments]
        refund_ids = [refund.refund_id for refund in plan.refunds]
        _log_drain(await drain(settings, ids, options.drain_timeout_s, refund_ids))
        await _stop_task(supervisor, stop_supervising)
        exit_codes = await pool.stop_all()

        engine = create_engine(settings.database_url)
        try:
            statuses = await read_statuses(engine, ids)
            store_refunds = await read_store_refunds(engine, ids)
        finally:
            await engine.dispose()
        results = await read_results(
            kafka_client_options(settings), settings.results_topic, settings.topic_partitions
        )
        facts = RunFacts(
            payment_ids=ids,
            min_kills=options.kills,
            ledger=await read_ledger(sandbox_url),
            statuses=statuses,
            results=results,
            kills=pool.kills,
            restarts=pool.restarts,
            broker_restarts=None if broker is None else broker.restarts,
            wall_s=time.monotonic() - started,
            consumer_exit_codes=exit_codes,
            crashes=[str(crash) for crash in pool.crashes],
            final_when_faults_stopped=final_at_calm,
            refunds=RefundFacts(plan.refunds, store_refunds, results.refund_events),
        )
        return judge(facts)
    finally:
        await cleanup.aclose()


async def _chaos_phase(
    options: ChaosOptions,
    settings: Settings,
    plan: FeedPlan,
    pool: ConsumerPool,
    broker: BrokerControl | None,
    prefix: str,
) -> int:
    """Feed while killing consumers; restart the broker once half the feed is out.

    Returns how many payments were final when the faults stopped: the rest were processed
    without faults, so the share says how much of the run the faults really covered.
    """
    feed_done = asyncio.Event()
    halfway = asyncio.Event()
    feeder = Feeder(kafka_client_options(settings), settings.commands_topic, plan, halfway)
    engine = create_engine(settings.database_url)

    async def finished() -> int:
        return await count_final(engine, prefix)

    async def idle() -> bool:
        return await finished() >= feeder.fed

    probe = None
    if options.kill_schedule == "busy":
        probe = GroupProbe(kafka_client_options(settings), settings.consumer_group, pool.size, idle)
    rng = random.Random(f"{options.seed}:faults")
    kills = kill_consumers(pool, rng, feed_done=feed_done, min_kills=options.kills, probe=probe)
    faults = [asyncio.create_task(kills, name="kills")]
    if broker is not None:
        faults.append(asyncio.create_task(broker.restart_when(halfway), name="broker-restart"))
    try:
        await feeder.run()
        feed_done.set()
        log.info(
            "feed done: %d messages sent, %d batches resent", feeder.sent, feeder.resent_batches
        )
        await asyncio.gather(*faults)
        return await finished()
    finally:
        for task in faults:
            task.cancel()
        await asyncio.gather(*faults, return_exceptions=True)
        if probe is not None:
            await probe.close()
        await engine.dispose()


async def _stop_task(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    await task


def _plan(options: ChaosOptions, run_id: str) -> FeedPlan:
    return build_plan(
        payments=options.payments,
        duplicate_rate=options.duplicate_rate,
        feed_s=options.feed_s,
        run_id=run_id,
        rng=random.Random(f"{options.seed}:feed"),
        messages=PaymentMessages.bundled(),
        refund_share=options.refund_share,
        refund_rng=random.Random(f"{options.seed}:refunds"),
    )


def _log_drain(report: DrainReport) -> None:
    log.info(
        "drain: %.1f s, %d reconcile passes %s, %d outbox rows left%s",
        report.seconds,
        report.reconcile_passes,
        dict(report.reconciled),
        report.outbox_left,
        " (timed out)" if report.timed_out else "",
    )


def _describe(options: ChaosOptions) -> str:
    return " ".join(f"{name}={getattr(options, name)}" for name in options.__slots__)
