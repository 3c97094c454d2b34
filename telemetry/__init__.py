"""Shared infrastructure below every layer: the Prometheus metrics container. It imports
nothing of paygate's, so the consumer, the producer, the facade and the wiring can all use
it without pointing upwards."""
