"""One chaos run, start to verdict. The order of the phases is the point:

1. broker (ours, unless ``KAFKA_BOOTSTRAP_SERVERS`` names one), topics, acquirer, consumers;
2. feed (copies without their order's key included, captures and cancels behind the
   authorize-only payments), while consumers are SIGKILLed and replaced or frozen into
   zombies and thawed, and the broker restarts once; the harness plays the payers of the
   payments that require an action, and sends each capture-cancel race once its
   authorization is known, from now until the drain is over;
3. drain: no more faults; every payment final (reconciling the in-doubt, closing the
   expired actions), outbox empty, and (bounded) the command topic committed to its end,
   then drained once more for what the last commands did;
4. SIGTERM the consumers (they must exit 0), then read the evidence and judge it;
5. stop the acquirer and the broker, whatever happened before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from pathlib import Path

from devtools.chaos.attempt_evidence import read_store_attempts
from devtools.chaos.consumer_pool import ConsumerPool
from devtools.chaos.drain import DrainReport, drain
from devtools.chaos.evidence import count_final, read_ledger, read_results, read_statuses
from devtools.chaos.fault_verdict import FaultFacts
from devtools.chaos.faults import BrokerControl, inject_faults, supervise
from devtools.chaos.feed_plan import (
    Echo,
    EchoKey,
    FeedPlan,
    PlannedPayment,
    build_plan,
    order_prefix,
)
from devtools.chaos.feeder import Feeder
from devtools.chaos.group_probe import GroupProbe
from devtools.chaos.harness import child_environment, start_acquirer
from devtools.chaos.lifecycle_evidence import read_lifecycle
from devtools.chaos.lifecycle_verdict import LifecycleFacts
from devtools.chaos.options import ChaosOptions
from devtools.chaos.payer_actions import Payers
from devtools.chaos.payers import fails_first, has_latency
from devtools.chaos.racer import Racer, unsent
from devtools.chaos.refund_evidence import read_store_refunds
from devtools.chaos.refund_plan import PlannedRefund
from devtools.chaos.refund_verdict import RefundFacts
from devtools.chaos.sealed_accounts import public_key_of
from devtools.chaos.stall_evidence import read_stalls
from devtools.chaos.store_lock import sqlite_lock_probe
from devtools.chaos.verdict import RunFacts, Verdict, judge
from devtools.chaos.zombie import Zombies
from devtools.kafka import LocalKafka
from devtools.verdict_run import run_in_work_dir
from paygate.kafka_security import kafka_client_options
from paygate.settings import Settings
from paygate.topics import ensure_topics
from persistence.engine import create_engine
from schemas.payments import PaymentMessages

log = logging.getLogger("devtools.chaos")


def chaos_settings(
    base: Settings,
    *,
    bootstrap: str,
    run_id: str,
    database_url: str,
    sandbox_url: str,
    account_key_file: Path,
    provider_timeout_s: float = 1.0,
) -> Settings:
    """The consumers' settings: short windows, so in-doubt payments resolve within the run.

    The validators' rules hold: min age (timeout + 1 s) > provider timeout, abandon
    (at least 60 s) > 2 x min age. Abandoning after 60 s gives a redelivered in-doubt
    attempt 30 s in which the handler still re-sends it (half of it): a zombie's payments
    reach their new owner after the session timeout and a rebalance, and must find it
    willing to call the acquirer. Back-offs are capped at 5 s, so a consumer that caps a
    provider's ``Retry-After`` at its longest back-off retries within the run. A claim
    lasts 2 s longer than a provider call, so a killed consumer's payments move on within
    the run and a live owner is not replaced mid-call; closed keys are verified at the
    acquirer (the stray-charge sweep) a little after a call could still land.
    """
    min_age_s = provider_timeout_s + 1.0
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
        "accept_clear_account_numbers": False,
        "account_encryption_key_files": [account_key_file],
        "provider_timeout_s": provider_timeout_s,
        "reconcile_min_age_s": min_age_s,
        "reconcile_interval_s": 1.0,
        "abandon_after_s": max(60.0, 2 * min_age_s + 10.0),
        "retry_max_delay_s": 5.0,
        "claim_lease_s": 1.5 * provider_timeout_s + 2.0,  # a fresh claim's call ends inside
        "stray_settle_s": 2 * provider_timeout_s + 1.0,
        # The acquirer's holds run out within the run: each pass finds those that did.
        "authorization_check_interval_s": 1.0,
        "metrics_port": 0,
    }
    fields = base.model_dump(exclude={"kafka_bootstrap_servers"})
    # Validated again, so a bad base setting (or a bad window above) fails here, loudly.
    return Settings.model_validate({**fields, **updates})


async def run_chaos(options: ChaosOptions, base: Settings, command_line: str) -> int:
    """The whole run; prints the table and returns 0 (pass) or 1 (a check failed)."""
    started = time.monotonic()
    run_id = uuid.uuid4().hex[:10]  # unique names; the seed fixes everything else
    return await run_in_work_dir(
        options,
        command_line,
        "paygate-chaos-",
        lambda work_dir: _run(options, base, run_id, work_dir, started),
    )


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
            account_key_file=work_dir / "account-key.pem",
            provider_timeout_s=options.provider_timeout_s,
        )
        await ensure_topics(settings)
        # Made before the consumers start, so that they all load this key, not one each.
        public_key = public_key_of(settings.account_encryption_key_files[0])
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

        plan = _plan(options, run_id, public_key)
        log.info(
            "feeding %d payments (%d with a payer action, %d authorize-only with %d captures "
            "and cancels) and %d refunds (+%d duplicates, +%d copies under another key)",
            len(plan.payments),
            len(plan.actions),
            len(plan.authorizations),
            plan.follow_ups,
            len(plan.refunds),
            plan.duplicates,
            len(plan.echoes),
        )
        payer_engine = create_engine(settings.database_url)
        cleanup.push_async_callback(payer_engine.dispose)
        payers = Payers(payer_engine, plan.actions)
        stop_payers = asyncio.Event()
        payer_task = asyncio.create_task(payers.run(stop_payers), name="payers")
        cleanup.push_async_callback(_stop_task, payer_task, stop_payers)
        racer = Racer(
            payer_engine, kafka_client_options(settings), settings.commands_topic, plan.races
        )
        racer_task = asyncio.create_task(racer.run(stop_payers), name="racer")
        cleanup.push_async_callback(_stop_task, racer_task, stop_payers)
        final_at_calm, zombies = await _chaos_phase(
            options, settings, plan, pool, broker, order_prefix(run_id), sandbox_url
        )
        ids = [payment.payment_id for payment in plan.payments]
        refund_ids = [refund.refund_id for refund in plan.refunds]
        held = list(plan.authorizations)
        _log_drain(await drain(settings, ids, options.drain_timeout_s, refund_ids, held))
        # A payer who acts after the expiry may come after the drain: let them (bounded).
        await payers.wait_done(options.action_ttl_s)
        stalls = await read_stalls(
            kafka_client_options(settings),
            settings.consumer_group,
            settings.commands_topic,
            settings.topic_partitions,
        )
        # The commands handled while the group caught up (a capture right behind its
        # authorization) are final, their events published, before anything is read.
        _log_drain(await drain(settings, ids, options.drain_timeout_s, refund_ids, held))
        await _stop_task(payer_task, stop_payers)
        await _stop_task(racer_task, stop_payers)
        if unsent(racer):
            log.warning("races never sent (the broker never took them): %s", unsent(racer))
        await _stop_task(supervisor, stop_supervising)
        exit_codes = await pool.stop_all()

        lifecycle_ids = [*plan.actions, *plan.authorizations]
        engine = create_engine(settings.database_url)
        try:
            statuses = await read_statuses(engine, ids)
            store_refunds = await read_store_refunds(engine, ids)
            attempts = await read_store_attempts(engine, ids)
            lifecycle_rows = await read_lifecycle(engine, lifecycle_ids)
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
            refunds=RefundFacts(
                plan.refunds,
                store_refunds,
                results.refund_events,
                echoed=frozenset(e.command.command_id for e in plan.echoes if _is_refund(e)),
            ),
            faults=FaultFacts(
                echoed_payments=_echoed(plan, PlannedPayment),
                echoed_refunds=_echoed(plan, PlannedRefund),
                zombie_episodes=zombies.episodes if zombies else [],
                lock_holders=zombies.lock_holders if zombies else 0,
                min_zombies=options.zombies,
                payers={payment.payment_id: payment.payer for payment in plan.payments},
                attempts=attempts,
                stalls=stalls,
            ),
            lifecycle=LifecycleFacts(
                actions=plan.actions,
                acts=dict(payers.acts),
                authorizations=plan.authorizations,
                store=lifecycle_rows,
            ),
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
    sandbox_url: str,
) -> tuple[int, Zombies | None]:
    """Feed while killing consumers and making zombies of them; restart the broker once
    half the feed is out.

    Returns how many payments were final when the faults stopped (the rest were processed
    without faults, so the share says how much of the run the faults really covered), and
    the zombie maker with its episodes (None when the run makes no zombies).
    """
    feed_done = asyncio.Event()
    halfway = asyncio.Event()
    feeder = Feeder(kafka_client_options(settings), settings.commands_topic, plan, halfway)
    engine = create_engine(settings.database_url)

    async def finished() -> int:
        return await count_final(engine, prefix)

    async def idle() -> bool:
        # A payment waiting for its payer gives no consumer anything to do.
        return await count_final(engine, prefix, waiting=True) >= feeder.fed

    probe = None
    if options.kill_schedule == "busy" or options.zombies:
        probe = GroupProbe(kafka_client_options(settings), settings.consumer_group, pool.size, idle)
    zombies = None
    if options.zombies and probe is not None:
        # Aim at back-offs whose next call is slow: the other consumer's call for the same
        # payment then lasts long enough for the thawed zombie to cross it.
        slow = {
            p.payment_id for p in plan.payments if has_latency(p.payer) and fails_first(p.payer)
        }
        zombies = Zombies(
            pool,
            probe,
            sandbox_url,
            slow,
            store_locked=sqlite_lock_probe(settings.database_url),
        )
    rng = random.Random(f"{options.seed}:faults")
    injected = inject_faults(
        pool,
        rng,
        feed_done=feed_done,
        min_kills=options.kills,
        probe=probe if options.kill_schedule == "busy" else None,
        zombies=zombies,
        min_zombies=options.zombies,
    )
    faults = [asyncio.create_task(injected, name="faults")]
    if broker is not None:
        alone = None if zombies is None else zombies.alone
        faults.append(
            asyncio.create_task(broker.restart_when(halfway, alone), name="broker-restart")
        )
    try:
        await feeder.run()
        feed_done.set()
        log.info(
            "feed done: %d messages sent (%d copies under another key), %d batches resent",
            feeder.sent,
            feeder.echoed,
            feeder.resent_batches,
        )
        await asyncio.gather(*faults)
        return await finished(), zombies
    finally:
        for task in faults:
            task.cancel()
        await asyncio.gather(*faults, return_exceptions=True)
        if zombies is not None:
            await zombies.close()
        if probe is not None:
            await probe.close()
        await engine.dispose()


async def _stop_task(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    await task


def _plan(options: ChaosOptions, run_id: str, public_key_pem: bytes) -> FeedPlan:
    return build_plan(
        payments=options.payments,
        duplicate_rate=options.duplicate_rate,
        feed_s=options.feed_s,
        run_id=run_id,
        rng=random.Random(f"{options.seed}:feed"),
        messages=PaymentMessages.bundled(),
        public_key_pem=public_key_pem,
        refund_share=options.refund_share,
        refund_rng=random.Random(f"{options.seed}:refunds"),
        echo_rate=options.unkeyed_duplicate_rate,
        echo_rng=random.Random(f"{options.seed}:echoes"),
        action_share=options.action_share,
        authorize_share=options.authorize_share,
        lifecycle_rng=random.Random(f"{options.seed}:lifecycle"),
    )


def _is_refund(echo: Echo) -> bool:
    return isinstance(echo.command, PlannedRefund)


def _echoed(
    plan: FeedPlan, kind: type[PlannedPayment] | type[PlannedRefund]
) -> dict[EchoKey, frozenset[str]]:
    return {key: frozenset(plan.echoed(kind, key)) for key in EchoKey}


def _log_drain(report: DrainReport) -> None:
    log.info(
        "drain: %.1f s, %d reconcile passes %s, %d outbox rows left%s",
        report.seconds,
        report.reconcile_passes,
        dict(report.reconciled),
        report.outbox_left,
        " (timed out)" if report.timed_out else "",
    )
