"""Reading counters back in tests, summed over the labels a test does not care about."""

from __future__ import annotations

from telemetry.metrics import Metrics


def dead_lettered(metrics: Metrics, *, code: str | None = None, reason: str | None = None) -> float:
    """``paygate_dead_lettered_total`` summed over every label not given."""
    total = 0.0
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name != "paygate_dead_lettered_total":
                continue
            if code is not None and sample.labels.get("code") != code:
                continue
            if reason is not None and sample.labels.get("reason") != reason:
                continue
            total += sample.value
    return total


def sample_sum(metrics: Metrics, name: str, **labels: str) -> float:
    """The samples named ``name`` (e.g. ``paygate_consumer_lag``) with ``labels``, summed."""
    return sum(
        sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )
