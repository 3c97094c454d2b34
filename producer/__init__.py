"""Kafka producing: the command publisher (facade side) and the outbox relay (consumer side)."""
