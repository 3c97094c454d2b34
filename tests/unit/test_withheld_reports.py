"""A withheld re-send is counted on every finding and logged once an hour per payment."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from consumer.withheld_reports import LOG_EVERY, WithheldReports
from telemetry.metrics import Metrics
from tests.support.clock import Clock

pytestmark = pytest.mark.unit


def _lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "idempotency window" in r.getMessage()]


def _withheld(metrics: Metrics, operation: str) -> float | None:
    return metrics.registry.get_sample_value(
        "paygate_resends_withheld_total", {"provider": "stripe", "operation": operation}
    )


def test_every_finding_is_counted_but_logged_once_an_hour_per_payment(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="paygate.consumer")
    clock, metrics = Clock(), Metrics()
    reports = WithheldReports(metrics, clock)
    began = clock.now - timedelta(days=2)

    for _ in range(3):  # three passes, a minute apart
        reports.withheld("payment", "p-1", "stripe", began)
        clock.now += timedelta(minutes=1)
    reports.withheld("payment", "p-2", "stripe", began)  # another payment: its own line

    assert _withheld(metrics, "payment") == 4
    lines = _lines(caplog)
    assert [r.__dict__["payment_request_id"] for r in lines] == ["p-1", "p-2"]
    assert lines[0].levelno == logging.ERROR
    assert lines[0].getMessage().startswith("in-doubt payment older than")
    assert lines[0].__dict__["attempt_began_at"] == began.isoformat()

    clock.now += LOG_EVERY - timedelta(minutes=3)  # an hour after p-1's line
    reports.withheld("payment", "p-1", "stripe", began)

    lines = _lines(caplog)
    assert [r.__dict__["payment_request_id"] for r in lines] == ["p-1", "p-2", "p-1"]
    assert lines[-1].__dict__["withheld_unlogged"] == 2  # the two passes it stood for
    assert _withheld(metrics, "payment") == 5


def test_a_refund_is_logged_under_its_own_id_apart_from_a_payment_of_that_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="paygate.consumer")
    clock, metrics = Clock(), Metrics()
    reports = WithheldReports(metrics, clock)

    reports.withheld("payment", "x-1", "stripe", clock.now)
    reports.withheld("refund", "x-1", "stripe", clock.now)
    reports.withheld("refund", "x-1", "stripe", clock.now)

    lines = _lines(caplog)
    assert [r.getMessage().split()[1] for r in lines] == ["payment", "refund"]
    assert lines[1].__dict__["refund_id"] == "x-1"
    assert (_withheld(metrics, "payment"), _withheld(metrics, "refund")) == (1, 2)


def test_lines_older_than_the_interval_are_forgotten() -> None:
    clock = Clock()
    reports = WithheldReports(Metrics(), clock)
    for n in range(50):
        reports.withheld("payment", f"p-{n}", "stripe", clock.now)
    clock.now += LOG_EVERY
    reports.withheld("payment", "p-new", "stripe", clock.now)

    # Only the line of the last hour is remembered: memory does not grow with history.
    assert list(reports._logged) == [("payment", "p-new")]


def test_a_key_re_sent_the_most_it_may_be_is_counted_apart_and_logged_hourly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="paygate.consumer")
    clock, metrics = Clock(), Metrics()
    reports = WithheldReports(metrics, clock)

    for _ in range(3):
        reports.limit_reached("payment", "p-1", "alipay", 100)
        clock.now += timedelta(minutes=1)

    reached = metrics.registry.get_sample_value(
        "paygate_resend_limit_reached_total", {"provider": "alipay", "operation": "payment"}
    )
    assert reached == 3
    assert metrics.registry.get_sample_value(
        "paygate_resends_withheld_total", {"provider": "alipay", "operation": "payment"}
    ) in (None, 0.0)
    lines = [r for r in caplog.records if "re-sent the most" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].getMessage().startswith("in-doubt payment re-sent the most it may be")
    assert (lines[0].__dict__["payment_request_id"], lines[0].__dict__["resends"]) == ("p-1", 100)
