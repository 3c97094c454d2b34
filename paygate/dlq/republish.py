"""Re-publishing dead letters: the original key and value, unchanged, with headers added.

The producer is paygate's idempotent one (``acks=all``, ``enable.idempotence``), so a send
retried inside one run is written once. Nothing is removed from the DLQ (Kafka cannot
delete single messages): re-publishing the same dead letter twice sends it twice, which the
consumer makes harmless (same idempotency key, same payment; see docs/dead-letters.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from consumer.dead_letters import HEADER_FIRST_SEEN, REPUBLISHED_PREFIX
from paygate.dlq.entries import DeadLetter, DlqError, Handle
from producer.kafka_producer import KafkaProducer

HEADER_REPUBLISHED_FROM: Final = REPUBLISHED_PREFIX + "from"
HEADER_REPUBLISHED_AT: Final = REPUBLISHED_PREFIX + "at"


@dataclass(frozen=True, slots=True)
class Republished:
    """One dead letter sent again: from where, to where."""

    entry: DeadLetter
    source: str  # "dlq-topic:partition:offset", as in the header
    topic: str
    partition: int
    offset: int
    at: str


def target_topic(entry: DeadLetter, *, commands_topic: str, to_original: bool) -> str:
    if not to_original:
        return commands_topic
    if not entry.original_topic:
        raise DlqError(f"dead letter {entry.handle} has no original-topic header")
    return entry.original_topic


def check_targets(
    entries: Sequence[DeadLetter], *, commands_topic: str, to_original: bool
) -> dict[Handle, str]:
    """The target of every entry, or :class:`DlqError` before anything is sent."""
    return {
        e.handle: target_topic(e, commands_topic=commands_topic, to_original=to_original)
        for e in entries
    }


async def republish(
    kafka: Mapping[str, object],
    dlq_topic: str,
    entries: Sequence[DeadLetter],
    targets: dict[Handle, str],
) -> AsyncIterator[Republished]:
    """Send each entry in order, yielding each once the broker has acknowledged it."""
    async with KafkaProducer(kafka, client_id="paygate-dlq") as producer:
        for entry in entries:
            source = f"{dlq_topic}:{entry.handle}"
            at = datetime.now(UTC).isoformat()
            headers = [
                (HEADER_REPUBLISHED_FROM, source.encode()),
                (HEADER_REPUBLISHED_AT, at.encode()),
            ]
            if entry.first_seen:
                # Should it fail again, its new dead letter keeps the first failure's time.
                headers.append((HEADER_FIRST_SEEN, entry.first_seen.encode()))
            topic = targets[entry.handle]
            metadata = await producer.client.send_and_wait(
                topic, entry.value, key=entry.key, headers=headers
            )
            yield Republished(
                entry=entry,
                source=source,
                topic=topic,
                partition=metadata.partition,
                offset=metadata.offset,
                at=at,
            )
