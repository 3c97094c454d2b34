"""``PAYGATE_EVENT_LOOP`` picks the loop the process's ``asyncio.run`` creates."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import uvloop

from paygate.event_loop import use_event_loop
from paygate.settings import EventLoop, Settings

pytestmark = pytest.mark.unit


@pytest.fixture
def restored_policy() -> Iterator[None]:
    before = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(before)


def test_asyncio_is_the_default_and_changes_nothing(restored_policy: None) -> None:
    assert Settings().event_loop is EventLoop.ASYNCIO
    use_event_loop(EventLoop.ASYNCIO)
    loop = asyncio.new_event_loop()
    try:
        assert not isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_uvloop_makes_the_next_loops_uvloop(
    restored_policy: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYGATE_EVENT_LOOP", "uvloop")
    use_event_loop(Settings().event_loop)
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
