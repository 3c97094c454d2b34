"""A test client for the facade's app, served the way http_facade.server serves it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer


async def started_client(
    app: web.Application, headers: Mapping[str, str] | None = None
) -> TestClient[Any, Any]:
    """Started with aiohttp's own access log off, as in production: that log writes raw
    paths, and a path may hold whatever a client typed (even an account number)."""
    server = TestServer(app)
    # TestServer drops constructor options; start_server passes them on to the runner.
    await server.start_server(access_log=None)
    client: TestClient[Any, Any] = TestClient(server, headers=dict(headers or {}))
    await client.start_server()  # the server is running already: this only opens the session
    return client
