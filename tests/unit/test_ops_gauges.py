"""Lag, backlogs, assignment and relay readiness: the arithmetic, with fakes and no I/O."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from consumer.assignment import AssignmentWatch
from consumer.lag import ConsumerLag, partition_lag
from consumer.ops_gauges import OpsGauges
from persistence.backlogs import Backlog, WebhookBacklog
from producer.outbox_relay import OutboxRelay
from telemetry.metrics import Metrics
from tests.support.kafka_io import wait_for
from tests.support.metric_samples import sample_sum

pytestmark = pytest.mark.unit

T = "payments.commands"
NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)


class FakeOffsets:
    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()
        self.ends: dict[TopicPartition, int] = {}
        self.beginnings: dict[TopicPartition, int] = {}
        self.commits: dict[TopicPartition, int] = {}

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    async def end_offsets(self, partitions: list[TopicPartition]) -> Mapping[TopicPartition, int]:
        return {tp: self.ends[tp] for tp in partitions}

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> Mapping[TopicPartition, int]:
        return {tp: self.beginnings.get(tp, 0) for tp in partitions}

    async def committed(self, partition: TopicPartition) -> int | None:
        return self.commits.get(partition)


def lag_series(metrics: Metrics) -> dict[str, float]:
    return {
        s.labels["partition"]: s.value
        for f in metrics.registry.collect()
        for s in f.samples
        if s.name == "paygate_consumer_lag"
    }


def test_lag_counts_from_the_commit_or_else_from_the_first_offset_and_is_never_negative():
    assert partition_lag(end=10, committed=4, beginning=0) == 6
    assert partition_lag(end=10, committed=None, beginning=3) == 7
    assert partition_lag(end=10, committed=10, beginning=0) == 0
    # A commit ahead of a stale end (a sample racing a commit) is no negative lag.
    assert partition_lag(end=10, committed=12, beginning=0) == 0


async def test_each_sample_reports_exactly_the_partitions_assigned_now():
    source, metrics = FakeOffsets(), Metrics(CollectorRegistry())
    p0, p1, p2 = (TopicPartition(T, p) for p in range(3))
    source.assigned = {p0, p1}
    source.ends = {p0: 10, p1: 5, p2: 8}
    source.commits = {p0: 7}
    source.beginnings = {p1: 2}
    lag = ConsumerLag(source, metrics)
    assert await lag.sample() == {p0: 3, p1: 3}
    assert lag_series(metrics) == {"0": 3, "1": 3}
    assert sample_sum(metrics, "paygate_consumer_assigned_partitions") == 2

    # A rebalance moves p0 away and brings p2: p0's series goes, so sums count it once.
    source.assigned = {p1, p2}
    await lag.sample()
    assert lag_series(metrics) == {"1": 3, "2": 8}

    lag.clear()
    assert lag_series(metrics) == {}
    assert sample_sum(metrics, "paygate_consumer_assigned_partitions") == 0


class FakeBacklogs:
    def __init__(self, outbox: Backlog, in_doubt: Backlog) -> None:
        self.outbox_backlog, self.in_doubt = outbox, in_doubt
        self.webhooks = WebhookBacklog(Backlog(0, None), Backlog(0, None), 0)
        self.fail: Exception | None = None

    async def outbox(self) -> Backlog:
        if self.fail is not None:
            raise self.fail
        return self.outbox_backlog

    async def in_doubt_attempts(self) -> Backlog:
        return self.in_doubt

    async def webhook_deliveries(self) -> WebhookBacklog:
        return self.webhooks


async def test_backlogs_and_their_ages_are_set_from_the_store() -> None:
    metrics = Metrics(CollectorRegistry())
    backlogs = FakeBacklogs(
        Backlog(4, NOW - timedelta(seconds=90)), Backlog(2, NOW - timedelta(seconds=45))
    )
    gauges = OpsGauges(
        backlogs=backlogs,
        lag=ConsumerLag(FakeOffsets(), metrics),
        metrics=metrics,
        clock=lambda: NOW,
    )
    await gauges.sample()
    read = {
        name: sample_sum(metrics, f"paygate_{name}")
        for name in (
            "outbox_backlog",
            "outbox_oldest_age_seconds",
            "in_doubt_attempts",
            "in_doubt_oldest_age_seconds",
        )
    }
    assert read == {
        "outbox_backlog": 4,
        "outbox_oldest_age_seconds": 90,
        "in_doubt_attempts": 2,
        "in_doubt_oldest_age_seconds": 45,
    }
    backlogs.outbox_backlog = Backlog(0, None)
    await gauges.sample()
    assert sample_sum(metrics, "paygate_outbox_oldest_age_seconds") == 0


def webhook_series(metrics: Metrics) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("state", "")): sample.value
        for family in metrics.registry.collect()
        if family.name.startswith("paygate_webhook_deliveries")
        for sample in family.samples
    }


async def test_webhook_deliveries_owed_their_ages_and_the_failed_ones_are_set() -> None:
    metrics = Metrics(CollectorRegistry())
    backlogs = FakeBacklogs(Backlog(0, None), Backlog(0, None))
    backlogs.webhooks = WebhookBacklog(
        pending=Backlog(3, NOW - timedelta(seconds=20)),
        retrying=Backlog(7, NOW - timedelta(hours=2)),
        failed=5,
    )
    gauges = OpsGauges(
        backlogs=backlogs,
        lag=ConsumerLag(FakeOffsets(), metrics),
        metrics=metrics,
        clock=lambda: NOW,
    )
    await gauges.sample()
    assert webhook_series(metrics) == {
        ("paygate_webhook_deliveries_pending", "pending"): 3,
        ("paygate_webhook_deliveries_pending", "retrying"): 7,
        ("paygate_webhook_deliveries_oldest_age_seconds", "pending"): 20,
        ("paygate_webhook_deliveries_oldest_age_seconds", "retrying"): 7200,
        ("paygate_webhook_deliveries_failed", ""): 5,
    }
    # Drained: each state reads 0, and keeps its series (an alert sees 0, not no data).
    backlogs.webhooks = WebhookBacklog(Backlog(0, None), Backlog(0, None), 5)
    await gauges.sample()
    assert (
        webhook_series(metrics)[("paygate_webhook_deliveries_oldest_age_seconds", "pending")] == 0
    )
    assert webhook_series(metrics)[("paygate_webhook_deliveries_pending", "retrying")] == 0


async def test_failing_samples_are_logged_once_per_outage(caplog) -> None:
    metrics = Metrics(CollectorRegistry())
    backlogs = FakeBacklogs(Backlog(0, None), Backlog(0, None))
    backlogs.fail = ConnectionRefusedError("database down")
    gauges = OpsGauges(
        backlogs=backlogs,
        lag=ConsumerLag(FakeOffsets(), metrics),
        metrics=metrics,
        clock=lambda: NOW,
    )
    stop = asyncio.Event()
    passes = 0
    real_sample = gauges.sample

    async def counted() -> None:
        nonlocal passes
        passes += 1
        if passes == 5:
            stop.set()
        await real_sample()

    gauges.sample = counted  # type: ignore[method-assign]
    with caplog.at_level("INFO", logger="paygate.consumer.ops"):
        await gauges.run(stop, interval_s=0)
    assert passes == 5
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert all(r.exc_info is None for r in caplog.records)


async def test_no_assignment_is_ready_only_within_the_grace_period() -> None:
    now = [0.0]
    watch = AssignmentWatch(grace_s=30, clock=lambda: now[0])
    assert await watch.is_ready()  # starting
    now[0] = 31
    assert not await watch.is_ready()  # never got a partition
    watch.changed({TopicPartition(T, 0)})
    now[0] = 1000
    assert await watch.is_ready()  # holds one, however long
    watch.changed(set())  # a rebalance left it with none
    now[0] = 1029
    assert await watch.is_ready()
    now[0] = 1031
    assert not await watch.is_ready()


class NeverSource:
    async def unpublished(self, limit: int) -> list[Any]:
        return []

    async def mark_published(self, ids: list[int]) -> None:
        raise AssertionError("nothing to mark")


class Lease:
    holder = "me"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.calls = 0

    async def acquire(self) -> bool:
        self.calls += 1
        await self.gate.wait()
        return True

    async def release(self) -> None:
        return None


async def test_the_relay_is_ready_only_while_its_passes_finish_in_time() -> None:
    now = [0.0]
    lease = Lease()
    producer: Any = None  # never reached: there are no rows
    relay = OutboxRelay(
        NeverSource(),
        producer,
        Metrics(CollectorRegistry()),
        lease,
        idle_poll_s=0.01,
        stall_after_s=60,
        clock=lambda: now[0],
    )
    assert not await relay.is_ready()  # not running
    task = asyncio.create_task(relay.run())
    await wait_for(lambda: lease.calls >= 2)  # the first pass finished
    assert await relay.is_ready()
    lease.gate.clear()  # the next pass hangs, as on an unreachable database
    hung_at = lease.calls
    await wait_for(lambda: lease.calls > hung_at)
    now[0] = 59
    assert await relay.is_ready()
    now[0] = 61
    assert not await relay.is_ready()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not await relay.is_ready()


def test_the_relay_stall_threshold_must_exceed_the_relay_lease() -> None:
    from pydantic import ValidationError

    from paygate.settings import Settings

    with pytest.raises(ValidationError, match="PAYGATE_OUTBOX_STALL_S"):
        Settings(outbox_lease_s=15.0, outbox_stall_s=15.0)
    assert Settings(outbox_lease_s=15.0, outbox_stall_s=16.0).outbox_stall_s == 16.0
