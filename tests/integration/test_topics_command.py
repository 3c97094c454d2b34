"""`paygate topics` on a real broker: topics made as the settings say, and an existing
topic that differs reported rather than silently accepted."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from paygate.settings import Settings
from paygate.topics import TopicMismatchError, ensure_topics

pytestmark = pytest.mark.integration


async def test_created_topics_carry_the_settings_and_a_second_run_accepts_them(
    topic_settings: Settings,
):
    settings = topic_settings.model_copy(
        update={"topic_partitions": 2, "topic_retention_ms": 3_600_000}
    )
    assert await ensure_topics(settings) == [
        settings.commands_topic,
        settings.results_topic,
        settings.dlq_topic,
    ]
    assert await ensure_topics(settings) == []  # the same settings: nothing to report


async def test_an_existing_topic_with_other_settings_is_reported_not_changed(
    topic_settings: Settings,
):
    admin = AIOKafkaAdminClient(bootstrap_servers=topic_settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    topic_settings.commands_topic, 1, 1, topic_configs={"retention.ms": "7200000"}
                )
            ]
        )
    finally:
        await admin.close()
    with pytest.raises(TopicMismatchError) as reported:
        await ensure_topics(topic_settings)
    assert [str(found) for found in reported.value.drifts] == [
        f"{topic_settings.commands_topic}: partitions is 1, the settings want 3",
        f"{topic_settings.commands_topic}: retention.ms is 7200000, the settings want 604800000",
    ]
    # The missing topics were still created; the differing one was left as it was.
    assert await _partitions(topic_settings, topic_settings.commands_topic) == 1


async def _partitions(settings: Settings, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return len(described["partitions"])
