"""A client that goes away mid-request is an info line, not an error with a traceback.

Under overload, clients time out and close their connections by the thousand; each used to
log "unhandled error in request handler" with a traceback, burying the errors that matter.
A connection reset that is *not* the client leaving (a dependency's socket) stays a bug.

The first test serves the facade as production does (:func:`http_facade.server.run_facade`,
TLS, aiohttp's default of not cancelling handlers), not through aiohttp's test server,
which cancels the handler of a closed connection instead.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

import pytest

from http_facade.server import run_facade
from http_facade.tls import ensure_self_signed_certificate, server_ssl_context
from tests.support.facade_world import API_KEYS, World, payment_body, world_app, world_client
from tests.support.kafka_io import wait_for

pytestmark = pytest.mark.unit

KEY = next(iter(API_KEYS))


async def test_a_client_that_leaves_before_sending_its_body_is_one_info_line(
    caplog, tmp_path
) -> None:
    world = World()
    cert, key = ensure_self_signed_certificate(tmp_path)
    runner = await run_facade(world_app(world), "127.0.0.1", 0, server_ssl_context(cert, key))
    port = runner.addresses[0][1]
    caplog.set_level(logging.DEBUG)
    try:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ssl.create_default_context(cafile=str(cert))
        )
        writer.write(
            b"POST /v1/payments HTTP/1.1\r\n"
            b"Host: paygate\r\n"
            b"Authorization: Bearer " + KEY.encode() + b"\r\n"
            b"Idempotency-Key: k-1\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n"
            b'{"userId": "us'
        )
        await writer.drain()
        writer.close()  # gone, 986 bytes short
        await writer.wait_closed()

        def logged(text: str) -> bool:
            return any(r.getMessage() == text for r in caplog.records)

        await wait_for(lambda: logged("POST /v1/payments 499"), timeout_s=10)
    finally:
        await runner.cleanup()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert [r for r in caplog.records if r.exc_info] == []
    gone = next(r for r in caplog.records if r.getMessage().startswith("client went away"))
    assert gone.levelno == logging.INFO
    assert world.published == []


async def test_a_connection_reset_that_is_not_the_client_leaving_stays_a_bug(caplog) -> None:
    world = World(publish_error=ConnectionResetError("a dependency's socket"))
    client = await world_client(world)
    try:
        with caplog.at_level(logging.INFO):
            response = await client.post(
                "/v1/payments",
                json=payment_body("order-reset"),
                headers={"Authorization": f"Bearer {KEY}", "Idempotency-Key": "k-2"},
            )
        assert response.status == 500
        assert (await response.json())["error"]["code"] == "internal_error"
    finally:
        await client.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["unhandled error in request handler"]
    assert errors[0].exc_info is not None
