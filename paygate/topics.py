"""Creates paygate's topics (idempotently) with the admin client, and reports existing
ones that differ from the settings (:mod:`paygate.topic_spec`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from paygate.kafka_login import check_kafka_login
from paygate.kafka_security import kafka_client_options
from paygate.settings import Settings
from paygate.topic_spec import ObservedTopic, TopicDrift, TopicSpec, drift, wanted_topics

_NO_ERROR: Final = 0
_TOPIC_ALREADY_EXISTS: Final = 36


class TopicSetupError(RuntimeError):
    pass


class TopicMismatchError(TopicSetupError):
    """Topics exist with other settings than paygate's: reported, never changed."""

    def __init__(self, drifts: list[TopicDrift]) -> None:
        self.drifts = drifts
        super().__init__(
            "existing topics differ from the settings (paygate does not change them; fix the "
            "topic or the PAYGATE_TOPIC_* settings):\n"
            + "\n".join(f"  - {found}" for found in drifts)
        )


async def ensure_topics(settings: Settings, *, timeout_s: float = 60.0) -> list[str]:
    """Create the command, result and dead-letter topics if missing; return those created.

    Safe to run from several processes at once: "already exists" counts as success. Raises
    :class:`TopicMismatchError` when a topic that existed before differs from the settings
    (partitions, replication factor, ``min.insync.replicas``, ``retention.ms``).
    """
    kafka = kafka_client_options(settings)
    await check_kafka_login(kafka)
    admin = AIOKafkaAdminClient(**kafka)
    await admin.start()
    try:
        wanted = wanted_topics(settings)
        names = [spec.name for spec in wanted]
        existing = set(await admin.list_topics())
        missing = [spec for spec in wanted if spec.name not in existing]
        if missing:
            await _create(admin, missing)
        # Creation is acknowledged before every broker's metadata shows the topic.
        deadline = time.monotonic() + timeout_s
        while not set(names) <= set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise TopicSetupError(f"topics {names} did not appear within {timeout_s}s")
            await asyncio.sleep(0.2)
        older = [spec for spec in wanted if spec.name in existing]
        if older:
            observed = await _describe(admin, [spec.name for spec in older])
            drifts = [found for spec in older for found in drift(spec, observed[spec.name])]
            if drifts:
                raise TopicMismatchError(drifts)
        return [spec.name for spec in missing]
    finally:
        await admin.close()


async def _create(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> None:
    response = await admin.create_topics(
        [
            NewTopic(
                spec.name, spec.partitions, spec.replication_factor, topic_configs=spec.configs
            )
            for spec in specs
        ]
    )
    for topic_error in response.topic_errors:
        name, code = topic_error[0], topic_error[1]
        if code not in (_NO_ERROR, _TOPIC_ALREADY_EXISTS):
            message = topic_error[2] if len(topic_error) > 2 else ""
            raise TopicSetupError(f"creating topic {name} failed with error code {code}: {message}")


async def _describe(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, ObservedTopic]:
    described: list[dict[str, Any]] = await admin.describe_topics(names)
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    )
    configs: dict[str, dict[str, str]] = {}
    for response in responses:
        # (error_code, error_message, resource_type, resource_name, config_entries)
        for resource in response.resources:
            error_code, error_message, name = resource[0], resource[1], resource[3]
            if error_code != _NO_ERROR:
                # Reporting every setting as "(unknown)" would look like drift; it is not.
                raise TopicSetupError(
                    f"cannot read the configuration of topic {name} (error code {error_code}: "
                    f"{error_message}); the principal needs DescribeConfigs on it"
                )
            configs[name] = {entry[0]: entry[1] for entry in resource[4]}
    observed = {}
    for entry in described:
        partitions = entry["partitions"]
        observed[entry["topic"]] = ObservedTopic(
            name=entry["topic"],
            partitions=len(partitions),
            replication_factor=len(partitions[0]["replicas"]) if partitions else 0,
            configs=configs.get(entry["topic"], {}),
        )
    return observed
