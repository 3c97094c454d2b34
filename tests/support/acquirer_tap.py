"""A recording reverse proxy in front of the sandbox acquirer: every call paygate made.

The acquirer's ledger records charges, not calls: an answer "503, failed before processing"
leaves no row, and a call with a key it already knows is a replay. Tests that count calls
(a decline is not retried; an unavailable acquirer is called exactly max-attempts times; an
in-doubt charge is asked about, never sent again) put this tap between paygate and the
acquirer. It forwards requests unchanged and runs its own event loop in a thread, so it
serves separate processes whatever loop, if any, the test runs.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from types import TracebackType

from aiohttp import ClientSession, ClientTimeout, web

IDEMPOTENCY_HEADER = "Idempotency-Key"
_CHARGES_PATH = "/v1/charges"
_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection"}


@dataclass(frozen=True, slots=True)
class AcquirerCall:
    method: str
    path: str
    attempt_key: str | None  # the Idempotency-Key of a charge, the key asked about otherwise
    status: int | None = None  # None: no answer (yet), e.g. the acquirer still hangs

    @property
    def payment_id(self) -> str | None:
        """The payment an attempt key belongs to (attempt keys are ``<payment id>-a<n>``)."""
        return None if self.attempt_key is None else self.attempt_key.rsplit("-a", 1)[0]

    @property
    def is_charge(self) -> bool:
        return self.method == "POST" and self.path == _CHARGES_PATH

    @property
    def is_status_query(self) -> bool:
        return self.method == "GET" and self.path.startswith(_CHARGES_PATH + "/")


class AcquirerTap:
    """``with AcquirerTap(upstream) as tap:`` point paygate at ``tap.url``, read ``tap.calls``."""

    def __init__(self, upstream: str, *, upstream_timeout_s: float = 120.0) -> None:
        self._upstream = upstream.rstrip("/")
        self._upstream_timeout_s = upstream_timeout_s
        self._calls: list[AcquirerCall] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="acquirer-tap")
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self.url = ""

    def __enter__(self) -> AcquirerTap:
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    def calls(self, payment_id: str) -> list[AcquirerCall]:
        """Every call about ``payment_id``'s attempts, in the order they arrived."""
        with self._lock:
            return [call for call in self._calls if call.payment_id == payment_id]

    def charges(self, payment_id: str) -> list[AcquirerCall]:
        return [call for call in self.calls(payment_id) if call.is_charge]

    def status_queries(self, payment_id: str) -> list[AcquirerCall]:
        return [call for call in self.calls(payment_id) if call.is_status_query]

    async def _start(self) -> str:
        self._session = ClientSession(timeout=ClientTimeout(total=self._upstream_timeout_s))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is None and request.path.startswith(_CHARGES_PATH + "/"):
            key = request.match_info["tail"].removeprefix("v1/charges/")
        # Recorded before it is forwarded: a call paygate gave up on still counts.
        index = self._record(AcquirerCall(request.method, request.path, key))
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(
            request.method,
            self._upstream + request.path_qs,
            data=body,
            headers=headers,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            self._answered(index, upstream.status)
            return web.Response(
                status=upstream.status,
                body=payload,
                content_type=upstream.content_type,
                charset=upstream.charset,
                headers={
                    k: v
                    for k, v in upstream.headers.items()
                    if k.lower() not in _HOP_BY_HOP and k.lower() != "content-type"
                },
            )

    def _record(self, call: AcquirerCall) -> int:
        with self._lock:
            self._calls.append(call)
            return len(self._calls) - 1

    def _answered(self, index: int, status: int) -> None:
        with self._lock:
            call = self._calls[index]
            self._calls[index] = AcquirerCall(call.method, call.path, call.attempt_key, status)
