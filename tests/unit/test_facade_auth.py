"""API keys, the per-client rate limit and the lookup cache, against fakes.

The application's side: which requests get 401 or 429, with which body and headers, and
what is logged. The real key store and the network are in the integration tests.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from domain.errors import CATALOGUE, ErrorCode
from http_facade.app import build_app
from http_facade.auth_cache import CachedAuthenticator
from http_facade.rate_limit import TokenBuckets
from telemetry.metrics import Metrics
from tests.support.app_client import started_client
from tests.support.memory_vault import memory_vault
from tests.unit.test_facade_validation import (
    ACCOUNT_KEY,
    FakePublisher,
    FakeQueries,
    FakeRefunds,
    FakeWaiter,
    valid_body,
)

pytestmark = pytest.mark.unit

KEY_A = "pgk_00000000000000aa_" + "1" * 64
KEY_B = "pgk_00000000000000bb_" + "2" * 64


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class KeyTable:
    """Stands in for the key store: keys that work, and the lookups it was asked for."""

    def __init__(self) -> None:
        self.clients = {KEY_A: "client-a", KEY_B: "client-b"}
        self.lookups = 0

    async def authenticate(self, api_key: str) -> str | None:
        self.lookups += 1
        return self.clients.get(api_key)


MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    clients: list[TestClient[Any, Any]] = []

    async def make(buckets: TokenBuckets | None = None) -> TestClient[Any, Any]:
        app = build_app(
            publisher=FakePublisher(),
            queries=FakeQueries(),
            refunds=FakeRefunds(),
            waiter=FakeWaiter(),
            metrics=Metrics(CollectorRegistry()),
            account_key=ACCOUNT_KEY,
            vault=memory_vault(ACCOUNT_KEY),
            authenticator=KeyTable(),
            rate_limiter=buckets or TokenBuckets(rate_per_s=1000.0, burst=1000),
        )
        client = await started_client(app)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def assert_unauthorized(response: Any, *, challenge_error: bool) -> None:
    spec = CATALOGUE[ErrorCode.AUTHENTICATION_FAILED]
    assert response.status == spec.http_status == 401
    body = await response.json()
    assert body["error"]["code"] == "authentication_failed"
    assert body["error"]["category"] == spec.category.value
    assert body["error"]["retryable"] is False
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert ('error="invalid_token"' in challenge) is challenge_error


async def test_a_request_without_a_key_is_refused(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.post("/v1/payments", json=valid_body())
    await assert_unauthorized(response, challenge_error=False)


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(f"Bearer {KEY_A[:-1]}", id="unknown"),
        pytest.param(f"Basic {KEY_A}", id="other-scheme"),
        pytest.param("Bearer", id="scheme-only"),
        pytest.param(KEY_A, id="no-scheme"),
        pytest.param("Bearer " + "a" * 300, id="too-long"),
    ],
)
async def test_a_bad_key_is_refused_and_not_echoed(
    make_client: MakeClient, authorization: str
) -> None:
    client = await make_client()
    response = await client.get("/v1/payments/pay_x", headers={"Authorization": authorization})
    await assert_unauthorized(response, challenge_error=True)
    assert KEY_A[4:-1] not in await response.text()


async def test_two_authorization_headers_are_refused(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get(
        "/v1/payments/pay_x",
        headers=[("Authorization", f"Bearer {KEY_A}"), ("Authorization", f"Bearer {KEY_B}")],
    )
    await assert_unauthorized(response, challenge_error=True)


async def test_the_scheme_is_case_insensitive(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/v1/payments/pay_x", headers={"Authorization": f"bearer {KEY_A}"})
    assert response.status == 404  # authenticated; the payment just does not exist


async def test_an_unknown_route_needs_a_key_too(make_client: MakeClient) -> None:
    # Without a key nothing is said about which paths exist.
    client = await make_client()
    await assert_unauthorized(await client.get("/v2/secret"), challenge_error=False)


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_probe_routes_are_public(make_client: MakeClient, path: str) -> None:
    client = await make_client()
    response = await client.get(path)
    assert response.status == 200


async def test_metrics_are_not_served_on_the_public_port(make_client: MakeClient) -> None:
    # They are on the ops listener only; here /metrics is an unknown path like any other.
    client = await make_client()
    await assert_unauthorized(await client.get("/metrics"), challenge_error=False)
    response = await client.get("/metrics", headers=bearer(KEY_A))
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_access_log_names_the_client_and_never_the_key(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client()
    with caplog.at_level(logging.DEBUG):
        ok = await client.get("/v1/payments/pay_x", headers=bearer(KEY_A))
        refused = await client.get("/v1/payments/pay_x", headers=bearer(KEY_A + "0"))
    assert (ok.status, refused.status) == (404, 401)
    lines = [vars(r) for r in caplog.records if r.name == "paygate.http"]
    assert [(line["status"], line.get("client_id")) for line in lines] == [
        (404, "client-a"),
        (401, None),
    ]
    assert KEY_A[4:] not in caplog.text


async def test_over_the_limit_is_429_with_retry_after(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make_client(TokenBuckets(rate_per_s=0.25, burst=2, clock=clock))
    statuses = [
        (await client.get("/v1/payments/pay_x", headers=bearer(KEY_A))).status for _ in range(2)
    ]
    assert statuses == [404, 404]
    refused = await client.get("/v1/payments/pay_x", headers=bearer(KEY_A))
    spec = CATALOGUE[ErrorCode.RATE_LIMITED]
    assert refused.status == spec.http_status == 429
    body = await refused.json()
    assert body["error"]["code"] == "rate_limited"
    assert body["error"]["retryable"] is True
    assert refused.headers["Retry-After"] == "4"  # one token at 0.25/s

    # Another client has its own bucket; probes are never limited.
    assert (await client.get("/v1/payments/pay_x", headers=bearer(KEY_B))).status == 404
    assert (await client.get("/healthz")).status == 200

    clock.now += 4
    assert (await client.get("/v1/payments/pay_x", headers=bearer(KEY_A))).status == 404


def test_buckets_refill_at_the_rate_up_to_the_burst() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate_per_s=10.0, burst=3, clock=clock)
    assert [buckets.take("c") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("c") == pytest.approx(0.1)
    clock.now += 60  # a long pause refills to the burst, not beyond
    assert [buckets.take("c") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("c") > 0


async def test_retry_after_is_whole_seconds_and_at_least_one(make_client: MakeClient) -> None:
    # The next token is 10 ms away; Retry-After cannot say less than a second.
    client = await make_client(TokenBuckets(rate_per_s=100.0, burst=1, clock=FakeClock()))
    assert (await client.get("/v1/payments/pay_x", headers=bearer(KEY_A))).status == 404
    refused = await client.get("/v1/payments/pay_x", headers=bearer(KEY_A))
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "1"


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (float("nan"), 1), (1.0, 0)])
def test_buckets_refuse_a_meaningless_setting(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        TokenBuckets(rate_per_s=rate, burst=burst)


async def test_cache_saves_lookups_for_its_ttl_only() -> None:
    clock, table = FakeClock(), KeyTable()
    cache = CachedAuthenticator(table, ttl_s=5.0, clock=clock)
    assert await cache.authenticate(KEY_A) == "client-a"
    assert await cache.authenticate(KEY_A) == "client-a"
    assert table.lookups == 1

    del table.clients[KEY_A]  # revoked
    clock.now += 5
    assert await cache.authenticate(KEY_A) is None
    assert table.lookups == 2


async def test_cache_never_remembers_a_refusal() -> None:
    clock, table = FakeClock(), KeyTable()
    cache = CachedAuthenticator(table, ttl_s=5.0, clock=clock)
    assert await cache.authenticate("pgk_new") is None
    table.clients["pgk_new"] = "client-new"  # issued a moment later
    assert await cache.authenticate("pgk_new") == "client-new"


async def test_cache_is_bounded() -> None:
    clock, table = FakeClock(), KeyTable()
    cache = CachedAuthenticator(table, ttl_s=5.0, max_entries=1, clock=clock)
    await cache.authenticate(KEY_A)
    await cache.authenticate(KEY_B)  # pushes KEY_A out
    await cache.authenticate(KEY_A)
    assert table.lookups == 3


async def test_a_zero_ttl_looks_up_every_time() -> None:
    table = KeyTable()
    cache = CachedAuthenticator(table, ttl_s=0)
    await cache.authenticate(KEY_A)
    await cache.authenticate(KEY_A)
    assert table.lookups == 2
