"""A local single-node Apache Kafka broker for the dev command and the test suite.

See :class:`LocalKafka`; ``python -m paygate.kafka`` runs one from the command line.
"""

from paygate.kafka.launcher import KafkaLaunchError, LocalKafka

__all__ = ["KafkaLaunchError", "LocalKafka"]
