"""The facade while its database is down: every request that needs it is 503 with
``Retry-After``, the outage is logged once when it starts and once when it ends, and a
bug is still a bug. Against the in-memory world, whose queries fail the way asyncpg
does when PostgreSQL refuses connections; the real database is in
tests/integration/test_dependency_outages.py."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from domain.payments import CreatePayment
from domain.status import PaymentStatus
from http_facade.auth_cache import CachedAuthenticator
from tests.support.facade_world import KEY_1, World, payment_body, world_client

pytestmark = pytest.mark.unit

AUTH = {"Authorization": f"Bearer {KEY_1}"}


@pytest.fixture
async def world() -> World:
    return World()


@pytest.fixture
async def client(world: World) -> AsyncIterator[TestClient[Any, Any]]:
    # As in production, a successful key lookup is cached: a request whose key was seen
    # before reaches its route's queries, one whose key was not fails at the lookup.
    client = await world_client(world, authenticator=CachedAuthenticator(world, ttl_s=60))
    yield client
    await client.close()


async def a_payment(world: World, client: TestClient[Any, Any]) -> str:
    async with client.post("/v1/payments", json=payment_body(), headers=AUTH) as response:
        assert response.status == 202
    command = world.last()
    assert isinstance(command, CreatePayment)
    return world.settle_payment(command, PaymentStatus.SUCCEEDED).payment_request_id


def requests(payment: str) -> list[tuple[str, str, dict[str, Any]]]:
    """One request per private operation, each valid, each needing the database."""
    return [
        ("POST", "/v1/payments", {"json": payment_body("order-2")}),
        ("GET", "/v1/payments?orderId=order-1", {}),
        ("GET", f"/v1/payments/{payment}", {}),
        (
            "POST",
            f"/v1/payments/{payment}/refunds",
            {"json": {}, "headers": {**AUTH, "Idempotency-Key": "refund-1"}},
        ),
        ("GET", "/v1/refunds/ref_" + "0" * 32, {}),
        ("POST", f"/v1/payments/{payment}/capture", {}),
    ]


def outage_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.name == "paygate.http" and "database" in r.getMessage()
    ]


async def test_every_operation_is_503_with_retry_after_and_one_line_per_outage(
    world: World, client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    payment = await a_payment(world, client)
    caplog.set_level(logging.DEBUG)
    world.database_down = True
    for _ in range(3):
        for method, path, options in requests(payment):
            async with client.request(method, path, **{"headers": AUTH, **options}) as response:
                body = await response.json()
                assert (response.status, body["error"]["code"]) == (503, "service_unavailable")
                assert body["error"]["retryable"] is True
                assert int(response.headers["Retry-After"]) >= 1
    assert outage_lines(caplog) == [("ERROR", "database unreachable")]
    [started] = [r for r in caplog.records if r.getMessage() == "database unreachable"]
    assert started.error_type == "ConnectionRefusedError"  # type: ignore[attr-defined]
    assert [r for r in caplog.records if r.exc_info] == []  # no traceback, for any request
    # Each failed at its own first query: the key lookups came from the cache.
    assert world.failed_queries == 3 * len(requests(payment))
    assert world.published[1:] == []  # nothing was published while it was down

    caplog.clear()
    world.database_down = False
    for method, path, options in requests(payment)[:3]:
        async with client.request(method, path, **{"headers": AUTH, **options}) as response:
            assert response.status in (200, 202)
    [(level, text)] = outage_lines(caplog)
    assert level == "INFO"
    assert text.startswith("database reachable again after ")


async def test_the_api_key_lookup_is_503_too(
    world: World, client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world.database_down = True
    async with client.get("/v1/payments?orderId=o", headers=AUTH) as response:  # not cached
        assert response.status == 503
        assert "Retry-After" in response.headers
    # Public routes need no database and stay up.
    async with client.get("/healthz") as response:
        assert response.status == 200
    assert outage_lines(caplog) == [("ERROR", "database unreachable")]


async def test_a_bug_in_a_query_is_still_a_500_with_its_traceback(
    world: World, client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(payment_request_id: str) -> None:
        raise KeyError("a bug, not an outage")

    # The read a GET of a payment makes: the payment and its refunds together.
    world.payment_with_refunds = broken  # type: ignore[method-assign]
    caplog.set_level(logging.DEBUG)
    async with client.get("/v1/payments/pay_" + "0" * 32, headers=AUTH) as response:
        assert response.status == 500
        assert "Retry-After" not in response.headers
    assert [r.getMessage() for r in caplog.records if r.exc_info] == [
        "unhandled error in request handler"
    ]
    assert outage_lines(caplog) == []
