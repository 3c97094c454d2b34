"""Readiness: a registry of named checks, each failing if it says so, raises or hangs."""

from __future__ import annotations

import asyncio
import logging

import pytest

from http_facade.readiness import Readiness

pytestmark = pytest.mark.unit


class Flag:
    def __init__(self, up: bool = True) -> None:
        self.up = up

    async def __call__(self) -> bool:
        return self.up


async def _raises() -> bool:
    raise ConnectionError("the database is gone")


async def _hangs() -> bool:
    await asyncio.Event().wait()
    return True


async def test_without_checks_the_facade_is_ready() -> None:
    report = await Readiness().report()
    assert (report.ready, dict(report.checks)) == (True, {})


async def test_the_report_names_every_check_and_is_ready_only_if_all_pass() -> None:
    readiness = Readiness()
    listener, database = Flag(), Flag()
    readiness.add("result_listener", listener)
    readiness.add("database", database)
    assert (await readiness.report()).ready
    listener.up = False
    report = await readiness.report()
    assert not report.ready
    assert dict(report.checks) == {"result_listener": False, "database": True}


async def test_a_check_that_raises_or_hangs_fails_and_is_logged(caplog) -> None:
    # A zero timeout expires at the hanging check's first await: no real waiting.
    readiness = Readiness(timeout_s=0.0)
    readiness.add("raises", _raises)
    readiness.add("hangs", _hangs)
    with caplog.at_level(logging.WARNING, logger="paygate.http.readiness"):
        report = await readiness.report()
    assert dict(report.checks) == {"raises": False, "hangs": False}
    assert {r.check for r in caplog.records} == {"raises", "hangs"}
    assert all(r.exc_info is None for r in caplog.records)


def test_a_name_is_registered_once() -> None:
    readiness = Readiness()
    readiness.add("result_listener", Flag())
    with pytest.raises(ValueError, match="already registered"):
        readiness.add("result_listener", Flag())
