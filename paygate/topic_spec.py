"""What paygate's topics should look like, and how an existing topic differs from it.

Pure: :mod:`paygate.topics` does the Kafka calls. A topic that already exists is never
changed by paygate (fewer partitions would move keys, other replicas need a reassignment
plan): its differences are reported, and an operator decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from paygate.settings import Settings

MIN_INSYNC_REPLICAS = "min.insync.replicas"
RETENTION_MS = "retention.ms"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ObservedTopic:
    """An existing topic as the brokers describe it."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]


@dataclass(frozen=True, slots=True)
class TopicDrift:
    topic: str
    setting: str
    wanted: str
    actual: str

    def __str__(self) -> str:
        return f"{self.topic}: {self.setting} is {self.actual}, the settings want {self.wanted}"


def wanted_topics(settings: Settings) -> list[TopicSpec]:
    """The command, result and dead-letter topics as the settings describe them."""

    def spec(name: str, retention_ms: int) -> TopicSpec:
        return TopicSpec(
            name,
            settings.topic_partitions,
            settings.topic_replication_factor,
            {
                MIN_INSYNC_REPLICAS: str(settings.topic_min_insync_replicas),
                RETENTION_MS: str(retention_ms),
            },
        )

    return [
        spec(settings.commands_topic, settings.topic_retention_ms),
        spec(settings.results_topic, settings.topic_retention_ms),
        spec(settings.dlq_topic, settings.dlq_retention_ms),
    ]


def drift(wanted: TopicSpec, actual: ObservedTopic) -> list[TopicDrift]:
    """Every way ``actual`` differs from ``wanted`` (empty: it is as the settings say)."""
    found = []
    if actual.partitions != wanted.partitions:
        found.append(
            TopicDrift(wanted.name, "partitions", str(wanted.partitions), str(actual.partitions))
        )
    if actual.replication_factor != wanted.replication_factor:
        found.append(
            TopicDrift(
                wanted.name,
                "replication factor",
                str(wanted.replication_factor),
                str(actual.replication_factor),
            )
        )
    for key, value in wanted.configs.items():
        seen = actual.configs.get(key, "(unknown)")
        if seen != value:
            found.append(TopicDrift(wanted.name, key, value, seen))
    return found
