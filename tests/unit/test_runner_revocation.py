"""A partition revoked while the runner's periodic commit of its offsets is awaited.

The run loop sends a commit and waits for the broker; meanwhile a rebalance revokes the
partition, and the revocation drains it, commits and forgets its offset tracker. When the
loop's commit then returns, the tracker is gone: the runner once looked it up with
``self._offsets[tp]`` and the ``KeyError`` ended the consumer (CI, 9338c7a).
``test_runner_kafka.py`` reaches this only when a real rebalance happens to land there;
here the interleaving is forced with the checkpoints of ``tests/support/interleaving.py``:
the fake broker parks every commit at a checkpoint, and the schedule runs the whole
revocation before the loop's commit returns.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError
from prometheus_client import CollectorRegistry

from consumer.runner import CommandRunner
from telemetry.metrics import Metrics
from tests.support.interleaving import Gate, Interleaving

pytestmark = pytest.mark.unit

TOPIC = "payments.commands"
TP = TopicPartition(TOPIC, 0)
LOOP, REBALANCE = 0, 1


class _Broker:
    """Stands for the AIOKafkaConsumer: one partition holding one record. Every commit
    stops at the gate while it is "sent"; a refused one raises as aiokafka does when the
    group is rebalancing."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.listener: Any = None
        self.sent: list[int] = []
        self.accepted: list[int] = []
        self.refuse_while_revoking = False
        self.revoking = False
        self._records = [ConsumerRecord(TOPIC, 0, 0, 0, 0, b"order-1", b"command", None, 7, 7, [])]
        self._paused: set[TopicPartition] = set()

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def pause(self, *partitions: TopicPartition) -> None:
        self._paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._paused.difference_update(partitions)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        if self._records:
            return {TP: [self._records.pop()]}
        await self.gate.checkpoint("poll")  # an idle poll: the loop waits its turn
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.sent.append(offsets[TP])
        refuse = self.refuse_while_revoking and self.revoking
        await self.gate.checkpoint(f"commit {offsets[TP]} sent")
        if refuse:
            raise CommitFailedError("the group has already rebalanced")
        self.accepted.append(offsets[TP])


class _Done:
    """Decodes every value to itself and handles it at once."""

    def __init__(self) -> None:
        self.handled: list[object] = []

    def decode_any_command(self, data: bytes) -> Any:
        return data

    async def handle(self, command: object) -> object:
        self.handled.append(command)
        return None


class _NoDeadLetters:
    async def route(self, **_: Any) -> None:
        raise AssertionError("nothing here is dead-lettered")


@pytest.mark.parametrize("revocation_commit", ["accepted", "refused"])
async def test_a_partition_revoked_while_its_commit_is_awaited_does_not_end_the_runner(
    revocation_commit: str,
) -> None:
    gate = Gate()
    broker = _Broker(gate)
    broker.refuse_while_revoking = revocation_commit == "refused"
    done = _Done()
    runner = CommandRunner(
        consumer=broker,  # the part of AIOKafkaConsumer the runner uses
        topic=TOPIC,
        messages=done,
        handler=done,
        dead_letters=_NoDeadLetters(),
        metrics=Metrics(CollectorRegistry()),
        commit_interval_s=0.0,  # a commit after every poll: the first one is the one held
        drain_timeout_s=5.0,
    )

    async def rebalance() -> None:
        await gate.checkpoint("rebalance begins")
        broker.revoking = True
        await broker.listener.on_partitions_revoked({TP})
        broker.revoking = False
        runner.stop()

    # Both start: the loop fetches the record and parks in its commit; the handling finishes
    # the record meanwhile. Then the whole revocation (its own commit included) runs before
    # the loop's commit returns; then the loop goes on and stops.
    interleaving = Interleaving([REBALANCE, REBALANCE, LOOP])
    gate.interleaving = interleaving
    results = await interleaving.run([runner.run, rebalance])

    assert results == [None, None]  # the loop did not die of the revoked partition
    assert interleaving.trace == [
        (LOOP, "commit 0 sent"),
        (REBALANCE, "rebalance begins"),
        (REBALANCE, "commit 1 sent"),
    ]
    assert done.handled == [b"command"]
    # The revocation asked to commit past the finished record; the loop's commit, sent
    # before the record was done, stood for the offset before it.
    assert broker.sent == [0, 1]
    assert sorted(broker.accepted) == ([0, 1] if revocation_commit == "accepted" else [0])
