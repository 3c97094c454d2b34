"""A dependency outage writes a bounded number of log lines, not one per message and try.

The consumer's handling (a hundred commands in flight, each retried at every back-off step
while the database is down) and the outbox relay's loop (a failed pass every few seconds)
each log the outage when it starts and when it ends, with a summary a minute between, and
never a traceback. Back-off waits advance a fake clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry
from sqlalchemy import exc as sa

from consumer.failures import outage_of
from consumer.record_handling import RecordHandling, consumer_outages
from persistence.outbox import PendingOutboxRow
from producer.outbox_relay import OutboxRelay
from telemetry.metrics import Metrics
from telemetry.outage_log import DEFAULT_SUMMARY_EVERY_S

pytestmark = pytest.mark.unit

IN_FLIGHT = 100
MAX_BACKOFF_S = 5.0
COMMAND = object()


class FakeClock:
    """``sharing`` waiters sleep side by side: each wait advances the clock by its share."""

    def __init__(self, sharing: int = 1) -> None:
        self.now = 1000.0
        self.sharing = sharing

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds / self.sharing
        await asyncio.sleep(0)  # let the other messages run


def database_down() -> Exception:
    return sa.OperationalError(
        "SELECT 1", {}, ConnectionRefusedError(111, "Connect call failed ('10.0.0.9', 5432)")
    )


class Decoder:
    def decode_any_command(self, data: bytes) -> Any:
        return COMMAND


class DownThenUp:
    """Every call fails while fewer than ``failures`` calls have failed, then all work."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.failed = 0

    async def handle(self, command: object) -> object:
        if self.failed < self.failures:
            self.failed += 1
            raise database_down()
        return "done"


class NoDeadLetters:
    async def route(self, **letter: Any) -> None:
        raise AssertionError("a good command is never dead-lettered for an outage")


def _record(offset: int) -> ConsumerRecord:
    key = f"order-{offset}".encode()
    return ConsumerRecord("payments.commands", 0, offset, 0, 0, key, b"c", None, 0, 1, [])


def _lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger]


def _bound(elapsed_s: float) -> int:
    """Start, end, and one summary per period at most."""
    return 2 + int(elapsed_s // DEFAULT_SUMMARY_EVERY_S) + 1


async def test_a_database_outage_under_a_hundred_commands_in_flight_is_a_few_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FakeClock(sharing=IN_FLIGHT)
    handler = DownThenUp(failures=3000)
    handling = RecordHandling(
        messages=Decoder(),
        handler=handler,
        dead_letters=NoDeadLetters(),
        max_attempts=3,
        max_backoff_s=MAX_BACKOFF_S,
        sleep=clock.sleep,
        outages=consumer_outages(clock=clock),
    )
    started = clock.now

    await asyncio.gather(*(handling.handle(_record(n)) for n in range(IN_FLIGHT)))

    lines = _lines(caplog, "paygate.consumer")
    assert handler.failed == 3000
    assert [r.getMessage() for r in lines[:1]] == ["database unreachable"]
    assert lines[-1].getMessage().startswith("database reachable again after")
    assert len(lines) <= _bound(clock.now - started)
    assert len(lines) < 30  # against 3000 failed tries
    assert all(r.exc_info is None for r in lines)
    assert any("still unreachable" in r.getMessage() for r in lines)


class FailingSource:
    """``unpublished`` fails ``failures`` times, then finds nothing and says so."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.recovered = asyncio.Event()

    async def unpublished(self, limit: int) -> list[PendingOutboxRow]:
        self.calls += 1
        if self.calls <= self.failures:
            raise database_down()
        self.recovered.set()
        return []

    async def mark_published(self, ids: list[int]) -> None:
        raise AssertionError("nothing to mark")


class HeldLease:
    holder = "relay-1"

    async def acquire(self) -> bool:
        return True

    async def release(self) -> None:
        return None


async def test_the_relay_logs_an_outage_once_and_summarises_it_instead_of_each_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    source = FailingSource(failures=400)
    relay = OutboxRelay(
        source,
        producer=None,  # type: ignore[arg-type]  # never reached: nothing to publish
        metrics=Metrics(CollectorRegistry()),
        lease=HeldLease(),
        clock=clock,
        sleep=clock.sleep,
        unreachable=outage_of,
    )
    started = clock.now
    run = asyncio.create_task(relay.run())
    await source.recovered.wait()
    await asyncio.sleep(0)  # the pass that found the database back finishes
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    lines = [r for r in _lines(caplog, "paygate.outbox") if "lease" not in r.getMessage()]
    assert source.calls > 400
    assert lines[0].getMessage() == "database unreachable"
    assert lines[0].levelno == logging.ERROR
    assert lines[-1].getMessage().startswith("database reachable again after")
    assert len(lines) <= _bound(clock.now - started)
    assert len(lines) < 60  # against 400 failed passes
    assert all(r.exc_info is None for r in lines)


async def test_a_relay_failure_nobody_knows_keeps_its_traceback_on_its_first_line_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()

    class Buggy(FailingSource):
        async def unpublished(self, limit: int) -> list[PendingOutboxRow]:
            self.calls += 1
            if self.calls <= self.failures:
                raise KeyError("a bug")
            self.recovered.set()
            return []

    source = Buggy(failures=50)
    relay = OutboxRelay(
        source,
        producer=None,  # type: ignore[arg-type]
        metrics=Metrics(CollectorRegistry()),
        lease=HeldLease(),
        clock=clock,
        sleep=clock.sleep,
        unreachable=outage_of,
    )
    run = asyncio.create_task(relay.run())
    await source.recovered.wait()
    await asyncio.sleep(0)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    lines = [r for r in _lines(caplog, "paygate.outbox") if "lease" not in r.getMessage()]
    assert lines[0].getMessage() == "a dependency of the outbox relay unreachable"
    assert lines[0].exc_info is not None
    assert all(r.exc_info is None for r in lines[1:])
    assert lines[-1].getMessage().startswith("a dependency of the outbox relay reachable again")
