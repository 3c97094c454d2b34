"""A local single-node Apache Kafka broker for the dev command and the test suite.

See :class:`LocalKafka`; ``python -m devtools.kafka`` runs one from the command line.
"""

from devtools.kafka.launcher import KafkaLaunchError, LocalKafka

__all__ = ["KafkaLaunchError", "LocalKafka"]
