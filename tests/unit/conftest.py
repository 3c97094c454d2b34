"""Fixtures of the unit tests that use the consumer's fakes: no I/O, no database, no broker.

Each test gets its own clock, metrics registry, fake database and scripted provider, so
nothing one test does is seen by another.
"""

from __future__ import annotations

import pytest

from telemetry.metrics import Metrics
from tests.support.clock import Clock
from tests.support.fake_stores import FakeDatabase
from tests.support.scripted_provider import ScriptedProvider


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def db(clock: Clock) -> FakeDatabase:
    return FakeDatabase(clock)


@pytest.fixture
def provider() -> ScriptedProvider:
    return ScriptedProvider()
