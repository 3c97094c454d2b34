"""A Kafka outage's flood of aiokafka error lines becomes one line per template a minute."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from paygate.jsonlog import JsonFormatter, configure_logging
from telemetry.log_throttle import RepeatThrottle

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, Clock]]:
    clock = Clock()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RepeatThrottle("aiokafka", period_s=60, clock=clock))
    loggers = [logging.getLogger(n) for n in ("aiokafka.conn", "aiokafka", "paygate.consumer")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    try:
        yield out, clock
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
            logger.propagate = True


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_seventy_lines_a_second_for_two_minutes_are_a_few_lines(captured) -> None:
    out, clock = captured
    conn, client = logging.getLogger("aiokafka.conn"), logging.getLogger("aiokafka")
    for tick in range(120 * 70):
        clock.now = tick / 70
        conn.error("Unable connect to node with id %s: %s", tick % 3, "refused")
        client.error("Unable to update metadata from %s", [1])

    lines = _lines(out)
    assert len(lines) == 4  # two templates, at 0 and 60 s
    later = [line for line in lines if "repeated" in line]
    assert len(later) == 2
    assert all(int(str(line["repeated"])) > 4000 for line in later)


def test_paygates_own_lines_and_other_templates_pass(captured) -> None:
    out, _clock = captured
    own = logging.getLogger("paygate.consumer")
    for _ in range(5):
        own.error("kafka unreachable")
    conn = logging.getLogger("aiokafka.conn")
    conn.error("Unable connect to node with id %s: %s", 1, "refused")
    conn.warning("another thing")

    assert [line["msg"] for line in _lines(out)] == [
        *["kafka unreachable"] * 5,
        "Unable connect to node with id 1: refused",
        "another thing",
    ]


def test_the_service_logs_throttle_the_kafka_client_and_the_trace_exporter() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging()
        [handler] = root.handlers
        throttled = {f._prefix for f in handler.filters if isinstance(f, RepeatThrottle)}
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert throttled == {"aiokafka", "opentelemetry"}
