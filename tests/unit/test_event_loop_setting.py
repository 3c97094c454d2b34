"""``PAYGATE_EVENT_LOOP`` picks the loop the process's ``asyncio.run`` creates."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
import uvloop

from paygate import cli, db_command, webhooks_command
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


def test_uvloop_missing_is_refused_with_how_to_install_it(
    restored_policy: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes ``import uvloop`` raise ImportError, as where it is absent.
    monkeypatch.setitem(sys.modules, "uvloop", None)
    with pytest.raises(SystemExit, match=r"needs uvloop: pip install 'paygate\[uvloop\]'"):
        use_event_loop(EventLoop.UVLOOP)
    assert not isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)


@pytest.mark.parametrize(
    "argv",
    [
        ["consumer"],
        ["db", "current"],
        ["apikey", "list"],
        ["keys", "list"],
        ["webhooks", "list"],
        ["dlq", "list"],
        ["schemas", "register"],
    ],
    ids=lambda argv: argv[0],
)
def test_every_entry_point_that_runs_a_loop_runs_it_on_the_setting(
    argv: list[str], restored_policy: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYGATE_EVENT_LOOP", "uvloop")
    monkeypatch.setenv("PAYGATE_SCHEMA_REGISTRY_URL", "http://127.0.0.1:9")
    # Development values are refused before any loop in production, the default.
    monkeypatch.setenv("PAYGATE_ENV", "development")
    policies: list[asyncio.AbstractEventLoopPolicy] = []

    def run_nothing(coroutine: Coroutine[Any, Any, Any], **_kwargs: Any) -> int:
        # The policy the loop would be made by; the command itself is not what is tested.
        policies.append(asyncio.get_event_loop_policy())
        coroutine.close()
        return 0

    monkeypatch.setattr(asyncio, "run", run_nothing)
    # The entry points set up the process's logging (root handlers, levels): not for the
    # rest of this test run, whose own log capture it would replace.
    for module in (cli, db_command, webhooks_command):
        monkeypatch.setattr(module, "configure_logging", lambda *_args: None)
    with contextlib.suppress(SystemExit):
        cli.main(argv)
    assert len(policies) == 1
    assert isinstance(policies[0], uvloop.EventLoopPolicy)
