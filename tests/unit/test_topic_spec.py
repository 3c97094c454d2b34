"""The topics paygate wants, from the settings, and how an existing one is compared."""

import pytest
from pydantic import ValidationError

from paygate.settings import Settings
from paygate.topic_spec import ObservedTopic, TopicDrift, drift, wanted_topics

pytestmark = pytest.mark.unit


def test_production_values_go_into_every_topic_and_the_dlq_keeps_longer():
    settings = Settings(
        topic_partitions=12,
        topic_replication_factor=3,
        topic_min_insync_replicas=2,
        topic_retention_ms=86_400_000,
        dlq_retention_ms=2_592_000_000,
    )
    commands, results, dlq = wanted_topics(settings)
    assert [commands.name, results.name, dlq.name] == [
        "payments.commands",
        "payments.results",
        "payments.commands.dlq",
    ]
    for spec in (commands, results, dlq):
        assert (spec.partitions, spec.replication_factor) == (12, 3)
        assert spec.configs["min.insync.replicas"] == "2"
    assert commands.configs["retention.ms"] == results.configs["retention.ms"] == "86400000"
    assert dlq.configs["retention.ms"] == "2592000000"


def test_development_defaults_suit_one_broker():
    commands = wanted_topics(Settings())[0]
    assert (commands.partitions, commands.replication_factor) == (3, 1)
    assert commands.configs == {"min.insync.replicas": "1", "retention.ms": "604800000"}


def test_min_insync_above_the_replication_factor_is_refused():
    with pytest.raises(ValidationError, match="PAYGATE_TOPIC_MIN_INSYNC_REPLICAS"):
        Settings(topic_replication_factor=2, topic_min_insync_replicas=3)


def test_an_identical_topic_has_no_drift():
    spec = wanted_topics(Settings())[0]
    same = ObservedTopic(spec.name, spec.partitions, spec.replication_factor, dict(spec.configs))
    assert drift(spec, same) == []


def test_every_difference_is_reported_with_both_values():
    spec = wanted_topics(Settings(topic_replication_factor=3, topic_min_insync_replicas=2))[0]
    actual = ObservedTopic(
        spec.name, 6, 1, {"min.insync.replicas": "1", "retention.ms": "604800000"}
    )
    assert drift(spec, actual) == [
        TopicDrift("payments.commands", "partitions", "3", "6"),
        TopicDrift("payments.commands", "replication factor", "3", "1"),
        TopicDrift("payments.commands", "min.insync.replicas", "2", "1"),
    ]
    assert str(drift(spec, actual)[0]) == (
        "payments.commands: partitions is 6, the settings want 3"
    )
