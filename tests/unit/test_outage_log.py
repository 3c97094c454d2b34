"""OutageLog: one line when a dependency goes away, bounded summaries, one line when it is back."""

from __future__ import annotations

import logging

import pytest

from telemetry.outage_log import OutageLog, error_types

pytestmark = pytest.mark.unit

LOGGER = "paygate.test.outage"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def refused() -> OSError:
    # The message stands for what a driver error may carry: it must never be logged.
    try:
        raise ConnectionRefusedError(111, "connect to secret-host failed, key=pgk_0123")
    except ConnectionRefusedError as cause:
        try:
            raise OSError("wrapped: SELECT * FROM api_keys WHERE digest = 'abc'") from cause
        except OSError as exc:
            return exc


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    outages = OutageLog("database", logging.getLogger(LOGGER), summary_every_s=60, clock=clock)
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    outages.succeeded()  # up, and up again: nothing to say
    assert records(caplog) == []

    for _ in range(50):
        outages.failed(refused())
        clock.now += 0.5  # 25 s of failures: inside one summary period
    [started] = records(caplog)
    assert (started.levelname, started.getMessage()) == ("ERROR", "database unreachable")
    assert started.error_type == "OSError <- ConnectionRefusedError"  # type: ignore[attr-defined]
    assert started.exc_info is None  # no traceback
    assert outages.is_down

    caplog.clear()
    outages.succeeded()
    outages.succeeded()
    [ended] = records(caplog)
    assert ended.levelname == "INFO"
    assert ended.getMessage() == "database reachable again after 25.0 s"
    assert (ended.down_for_s, ended.failed_calls) == (25.0, 50)  # type: ignore[attr-defined]
    assert not outages.is_down

    # The next outage is news again.
    caplog.clear()
    outages.failed(refused())
    assert [r.getMessage() for r in records(caplog)] == ["database unreachable"]


def test_a_long_outage_gets_one_summary_per_period_counting_the_failures_since_the_last(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    outages = OutageLog("kafka", logging.getLogger(LOGGER), summary_every_s=60, clock=clock)
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    outages.failed(refused())  # t=0: the start
    for _ in range(12):  # t=10..120, one failure every 10 s
        clock.now += 10
        outages.failed(refused())
    lines = [(r.levelname, r.getMessage()) for r in records(caplog)]
    assert lines == [
        ("ERROR", "kafka unreachable"),
        ("WARNING", "kafka still unreachable: 6 calls failed in the last 60 s"),
        ("WARNING", "kafka still unreachable: 6 calls failed in the last 60 s"),
    ]
    clock.now += 1000  # nobody called: nothing is written meanwhile
    assert len(records(caplog)) == 3
    outages.succeeded()
    assert records(caplog)[-1].failed_calls == 13  # type: ignore[attr-defined]


def test_no_line_carries_an_error_message(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    outages = OutageLog("database", logging.getLogger(LOGGER), summary_every_s=1, clock=clock)
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    for _ in range(3):
        outages.failed(refused())
        clock.now += 2
    outages.succeeded()
    assert len(records(caplog)) == 4
    for record in records(caplog):
        text = record.getMessage() + repr(vars(record))
        assert "secret-host" not in text
        assert "SELECT" not in text
        assert "pgk_" not in text


def test_error_types_follow_causes_and_stop_on_a_cycle() -> None:
    first = ValueError("a")
    second = KeyError("b")
    first.__cause__ = second
    second.__cause__ = first
    assert error_types(first) == "ValueError <- KeyError"


def test_the_summary_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="summary_every_s"):
        OutageLog("x", logging.getLogger(LOGGER), summary_every_s=0)
