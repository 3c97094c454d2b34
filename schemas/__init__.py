"""Avro contracts and the Confluent wire-format codec. Only this package knows bytes."""
