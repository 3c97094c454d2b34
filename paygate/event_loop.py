"""``PAYGATE_EVENT_LOOP``: which event loop implementation the process's ``asyncio.run``
creates. Set before any loop exists (and, for ``paygate facade --workers N``, before the
fork, which the workers inherit). Every entry point of ``paygate`` that runs a loop (the
commands, and the tools ``db``, ``apikey``, ``keys``, ``webhooks``, ``dlq``, ``schemas``)
calls :func:`use_event_loop` first, so the setting means the same in every process."""

from __future__ import annotations

import asyncio

from paygate.settings import EventLoop


def use_event_loop(choice: EventLoop) -> None:
    """Make the next ``asyncio.run`` use ``choice``; SystemExit if uvloop is not installed."""
    if choice is EventLoop.ASYNCIO:
        return
    try:
        import uvloop
    except ImportError:
        raise SystemExit(
            "PAYGATE_EVENT_LOOP=uvloop needs uvloop: pip install 'paygate[uvloop]'"
        ) from None
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
