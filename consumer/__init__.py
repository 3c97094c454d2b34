"""The processing pipeline: Kafka runner, dead-letter routing and command handlers."""
