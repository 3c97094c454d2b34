"""Reading a paygate process's ops listener from a test: ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp


async def readyz(ops_url: str) -> tuple[int, dict[str, Any]]:
    """``(status, body)`` of ``GET /readyz``."""
    async with aiohttp.ClientSession() as session, session.get(f"{ops_url}/readyz") as answer:
        return answer.status, await answer.json()


async def scrape(ops_url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{ops_url}/metrics") as answer:
        assert answer.status == 200
        return await answer.text()


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float = 60.0, interval_s: float = 0.2
) -> None:
    """Poll ``check`` until it is true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)


async def until_readyz(
    ops_url: str, status: int, failing: set[str] | None = None, *, timeout_s: float = 60.0
) -> dict[str, Any]:
    """Wait until ``/readyz`` answers ``status`` (and, given, exactly ``failing`` fail);
    return that body."""
    seen: dict[str, Any] = {}

    async def matches() -> bool:
        nonlocal seen
        answered, seen = await readyz(ops_url)
        bad = {name for name, state in seen["checks"].items() if state != "ok"}
        return answered == status and (failing is None or bad == failing)

    try:
        await eventually(matches, timeout_s=timeout_s)
    except AssertionError as exc:
        raise AssertionError(f"{ops_url}/readyz last said {seen}") from exc
    return seen
