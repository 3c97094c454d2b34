"""A loopback TCP forwarder that a test can cut and restore, to take a server away.

Cut, it behaves like a server that went down: open connections are dropped and new ones
are refused (nothing listens on the port). Restored, it listens on the same port again,
so clients configured with its address reconnect by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._port = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self._resetting = False
        # Connections reset at once since reset_all() (how often clients tried).
        self.resets = 0

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> int:
        """Listen (on a free port the first time, on the same port after a cut)."""
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        return self._port

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, as from a host that went away
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def reset_all(self) -> None:
        """Cut, but keep listening and reset every new connection at once (a server that
        is down behind a load balancer), counting them in ``resets``; :meth:`restore`
        ends it."""
        await self.cut()
        self.resets = 0
        self._resetting = True
        await self.start()

    async def restore(self) -> None:
        self._resetting = False

    async def _forward(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        if self._resetting:
            self.resets += 1
            client.transport.abort()
            return
        try:
            target_reader, target = await asyncio.open_connection(*self._target)
        except OSError:
            client.transport.abort()
            return
        self._writers.update((client, target))
        for reader, writer in ((client_reader, target), (target_reader, client)):
            pump = asyncio.create_task(_pump(reader, writer))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
