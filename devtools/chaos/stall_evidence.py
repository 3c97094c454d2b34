"""Whether the consumer group committed the whole command topic once the run drained.

Every command is final in the store by then and no fault is injected any more, so every
handler has returned and the group's committed offsets reach the end of every partition
within a commit interval. A partition that stays behind holds a handler still waiting:
a retry back-off that takes a provider's ``Retry-After: 86400`` at its word stalls it (and
every command behind it is redelivered at each rebalance). Read from the broker's side
(the group's committed offsets) and with a plain reader (the command at the committed
offset), not through the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from domain.refunds import RefundPayment
from schemas.payments import PaymentMessages

_POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class StalledPartition:
    partition: int
    committed: int  # the group's committed offset: the first command not done
    end: int
    command_id: str | None  # the payment or refund id of that command, if readable

    @property
    def behind(self) -> int:
        return self.end - self.committed

    def __str__(self) -> str:
        what = self.command_id or "an unreadable command"
        return (
            f"partition {self.partition} at offset {self.committed} ({what}), {self.behind} behind"
        )


async def read_stalls(
    kafka: Mapping[str, Any],
    group: str,
    topic: str,
    partitions: int,
    *,
    timeout_s: float = 30.0,
) -> list[StalledPartition]:
    """Wait (bounded) until ``group`` has committed ``topic`` to its end; the partitions
    still behind when the bound passes (none if it got there)."""
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    admin = AIOKafkaAdminClient(**kafka)
    reader = AIOKafkaConsumer(**kafka, group_id=None, enable_auto_commit=False)
    await admin.start()
    await reader.start()
    try:
        end = await reader.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while True:
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
            behind = {
                tp: max(0, _offset(committed.get(tp)))
                for tp in tps
                if _offset(committed.get(tp)) < end[tp]
            }
            if not behind or time.monotonic() > deadline:
                break
            await asyncio.sleep(_POLL_S)
        return [
            StalledPartition(tp.partition, offset, end[tp], await _command_at(reader, tp, offset))
            for tp, offset in sorted(behind.items(), key=lambda item: item[0].partition)
        ]
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await reader.stop()
        with contextlib.suppress(KafkaError, OSError):
            await admin.close()


def _offset(committed: object) -> int:
    """A committed offset, -1 for none (the group never committed the partition)."""
    offset = getattr(committed, "offset", -1)
    return offset if isinstance(offset, int) else -1


async def _command_at(reader: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> str | None:
    reader.assign([tp])
    reader.seek(tp, offset)
    records = (await reader.getmany(tp, timeout_ms=5000)).get(tp, [])
    if not records or records[0].value is None:
        return None
    try:
        command = PaymentMessages.bundled().decode_any_command(records[0].value)
    except Exception:  # an undecodable command is named as such, the check stands
        return None
    if isinstance(command, RefundPayment):
        return command.refund_id
    return command.payment_request_id
