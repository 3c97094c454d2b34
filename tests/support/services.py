"""Real services for the tests: where each comes from, and what happens when one is missing.

Kafka: ``KAFKA_BOOTSTRAP_SERVERS`` wins; else testcontainers when a Docker engine answers;
else the project's own launcher (Apache Kafka jars from Maven). PostgreSQL: the URL in
``PAYGATE_TEST_POSTGRES_URL`` (the test command starts a local server and sets it).

Under ``CI=true`` a missing service fails the test instead of skipping it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from enum import StrEnum

import pytest

POSTGRES_URL_ENV = "PAYGATE_TEST_POSTGRES_URL"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def service_missing(message: str) -> None:
    """Fail under CI, skip elsewhere: a developer without PostgreSQL can still run the rest."""
    if in_ci():
        pytest.fail(f"{message} (CI=true: required services must be present)", pytrace=False)
    pytest.skip(message)


class KafkaSource(StrEnum):
    ENVIRONMENT = "environment"
    TESTCONTAINERS = "testcontainers"
    LOCAL_JARS = "local-jars"


def docker_engine_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def choose_kafka_source(env: dict[str, str], docker_available: bool) -> KafkaSource:
    if env.get("KAFKA_BOOTSTRAP_SERVERS"):
        return KafkaSource.ENVIRONMENT
    if env.get("PAYGATE_TEST_KAFKA") == "local-jars":
        return KafkaSource.LOCAL_JARS
    if docker_available:
        return KafkaSource.TESTCONTAINERS
    return KafkaSource.LOCAL_JARS


@contextlib.contextmanager
def kafka_broker() -> Iterator[str]:
    env = dict(os.environ)
    source = choose_kafka_source(env, docker_available=docker_engine_answers())
    if source is KafkaSource.ENVIRONMENT:
        yield env["KAFKA_BOOTSTRAP_SERVERS"]
    elif source is KafkaSource.TESTCONTAINERS:
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
    else:
        from devtools.kafka import LocalKafka

        with LocalKafka() as kafka:
            yield kafka.bootstrap_servers
