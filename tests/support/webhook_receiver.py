"""A real HTTP webhook receiver (aiohttp server) that verifies every request with the
``standardwebhooks`` library, as a client's endpoint would.

``answers`` plans the status of the next requests (then 200); ``hang`` makes the next
requests wait until the client gives up (a receiver too slow to answer). ``arrived`` is
set by each verified request, so tests wait for arrivals, never for time.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Received:
    webhook_id: str
    body: dict[str, Any]
    status: int


class WebhookReceiver:
    def __init__(self, secret: str | None = None, sock: socket.socket | None = None) -> None:
        """``sock``: a socket bound (see :func:`bound_socket`) but not listening yet, which
        the receiver starts to serve on: until then, connections to its port are refused,
        as to a receiver that is down, and no other process can take the port."""
        self.secret = secret
        self._sock = sock
        self.port: int = 0 if sock is None else sock.getsockname()[1]
        self.received: list[Received] = []
        self.refused: list[str] = []
        self.answers: list[int] = []
        self.hang = 0
        self.arrived = asyncio.Event()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        sock = self._sock if self._sock is not None else bound_socket()
        await web.SockSite(self._runner, sock).start()
        self.port = sock.getsockname()[1]
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def verified_ids(self) -> list[str]:
        return [r.webhook_id for r in self.received if r.status == 200]

    async def wait_for(self, count: int, timeout_s: float = 30.0) -> None:
        """Until ``count`` requests were verified (answered or not), within ``timeout_s``."""

        async def enough() -> None:
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(enough(), timeout_s)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        assert self.secret is not None, "the receiver needs the endpoint's secret"
        try:
            Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            self.refused.append(str(exc))
            return web.Response(status=400)
        if self.hang:
            self.hang -= 1
            # Answers only when the receiver stops: the sender gives up long before.
            await self._release.wait()
        status = self.answers.pop(0) if self.answers else 200
        self.received.append(Received(request.headers["webhook-id"], json.loads(body), status))
        self.arrived.set()
        return web.Response(status=status)


def bound_socket() -> socket.socket:
    """A TCP socket bound to a free loopback port, not listening: connecting is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock
