"""Creates paygate's topics (idempotently) with the admin client."""

from __future__ import annotations

import asyncio
import time
from typing import Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from paygate.kafka_login import check_kafka_login
from paygate.kafka_security import kafka_client_options
from paygate.settings import Settings

_NO_ERROR: Final = 0
_TOPIC_ALREADY_EXISTS: Final = 36


class TopicSetupError(RuntimeError):
    pass


async def ensure_topics(
    settings: Settings, *, replication_factor: int = 1, timeout_s: float = 60.0
) -> list[str]:
    """Create the command, result and dead-letter topics if missing; return those created.

    Safe to run from several processes at once: "already exists" counts as success.
    """
    kafka = kafka_client_options(settings)
    await check_kafka_login(kafka)
    admin = AIOKafkaAdminClient(**kafka)
    await admin.start()
    try:
        wanted = [settings.commands_topic, settings.results_topic, settings.dlq_topic]
        missing = [name for name in wanted if name not in set(await admin.list_topics())]
        if missing:
            response = await admin.create_topics(
                [NewTopic(name, settings.topic_partitions, replication_factor) for name in missing]
            )
            for topic_error in response.topic_errors:
                name, code = topic_error[0], topic_error[1]
                if code not in (_NO_ERROR, _TOPIC_ALREADY_EXISTS):
                    raise TopicSetupError(f"creating topic {name} failed with error code {code}")
        # Creation is acknowledged before every broker's metadata shows the topic.
        deadline = time.monotonic() + timeout_s
        while not set(wanted) <= set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise TopicSetupError(f"topics {wanted} did not appear within {timeout_s}s")
            await asyncio.sleep(0.2)
        return missing
    finally:
        await admin.close()
