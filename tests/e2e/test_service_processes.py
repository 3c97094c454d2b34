"""The whole service as separate processes: HTTPS in, Kafka in the middle, results out.

The sandbox acquirer, the consumer and the facade run as ``paygate`` processes against the
session's real broker, once with the store on SQLite and once on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from paygate.settings import Settings
from paygate.topics import ensure_topics
from tests.support.builders import (
    DECLINED_CARD,
    INSUFFICIENT_FUNDS_CARD,
    PAYEE_IBAN,
    SUCCESS_CARD,
)
from tests.support.processes import ServiceProcess, environment_of, start_service

pytestmark = pytest.mark.e2e

CASES = [
    (SUCCESS_CARD, "succeeded", None),
    (DECLINED_CARD, "failed", "payment_declined"),
    (INSUFFICIENT_FUNDS_CARD, "failed", "insufficient_funds"),
]


class Stack:
    """The running processes; two facades stand for instances behind a load balancer."""

    def __init__(
        self, url: str, cert: Path, processes: list[ServiceProcess], *, second_url: str
    ) -> None:
        self.url = url
        self.second_url = second_url
        self.cert = cert
        self.processes = processes

    def session(self, url: str | None = None) -> aiohttp.ClientSession:
        context = ssl.create_default_context(cafile=str(self.cert))
        return aiohttp.ClientSession(
            base_url=url or self.url, connector=aiohttp.TCPConnector(ssl=context)
        )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp(f"stack-{request.param}")
    if request.param == "sqlite":
        database_url = f"sqlite+aiosqlite:///{work / 'paygate.db'}"
    else:
        database_url = request.getfixturevalue("postgres_database_url")
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        commands_topic=f"e2e.commands.{suffix}",
        results_topic=f"e2e.results.{suffix}",
        dlq_topic=f"e2e.dlq.{suffix}",
        consumer_group=f"e2e-{suffix}",
        database_url=database_url,
        tls_dir=work / "tls",
        http_port=0,
        acquirer_port=0,
        acquirer_ledger=work / "ledger.db",
        metrics_port=0,
        provider_timeout_s=5,
    )
    asyncio.run(ensure_topics(settings))
    env = environment_of(settings)
    processes: list[ServiceProcess] = []
    try:
        acquirer = start_service(
            "acquirer", ["acquirer"], env=env, log_dir=work, announce_prefix="SANDBOX_URL="
        )
        processes.append(acquirer)
        env["PAYGATE_SANDBOX_URL"] = acquirer.announced
        processes.append(start_service("consumer", ["consumer"], env=env, log_dir=work))
        facades = [
            start_service(name, ["facade"], env=env, log_dir=work, announce_prefix="PAYGATE_URL=")
            for name in ("facade", "facade-2")
        ]
        processes.extend(facades)
        yield Stack(
            facades[0].announced,
            work / "tls" / "localhost.crt",
            processes,
            second_url=facades[1].announced,
        )
    finally:
        for process in reversed(processes):
            process.stop()
    for process in processes:
        assert process.process.returncode == 0, (
            f"{process.name} exited badly:\n{process.log()[-3000:]}"
        )
        for number in (SUCCESS_CARD, DECLINED_CARD, INSUFFICIENT_FUNDS_CARD, PAYEE_IBAN):
            assert number not in process.log(), f"{process.name} logged a clear account number"


def _body(card: str) -> dict[str, object]:
    return {
        "userId": "user-e2e",
        "orderId": f"order-{uuid.uuid4().hex[:12]}",
        "amount": "25.00",
        "currency": "EUR",
        "paymentMethod": "card",
        "payerAccount": {"type": "card", "number": card},
        "payeeAccount": {"type": "iban", "number": PAYEE_IBAN},
    }


async def _poll_final(session: aiohttp.ClientSession, payment_id: str, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with session.get(f"/v1/payments/{payment_id}") as response:
            if response.status == 200:
                body = await response.json()
                if body["status"] in ("succeeded", "failed"):
                    return body
            else:
                assert response.status == 404  # still queued
        await asyncio.sleep(0.1)
    raise AssertionError(f"{payment_id} was not final within {timeout_s}s")


@pytest.mark.parametrize(("card", "status", "code"), CASES, ids=["success", "decline", "no-funds"])
async def test_post_then_get(stack: Stack, card: str, status: str, code: str | None) -> None:
    async with stack.session() as session:
        async with session.post("/v1/payments", json=_body(card)) as response:
            assert response.status == 202
            accepted = await response.json()
        assert accepted["status"] == "pending"
        assert accepted["paymentResult"] is False
        payment = await _poll_final(session, accepted["paymentRequestId"])
    assert payment["status"] == status
    assert payment["paymentResult"] is (status == "succeeded")
    assert payment["amount"] == "25.00"
    assert payment["payerAccount"]["number"] == "****" + card[-4:]
    if code is None:
        assert payment["error"] is None
        assert payment["providerReference"].startswith("ch_")
    else:
        assert payment["error"]["code"] == code
        assert payment["error"]["retryable"] is False


@pytest.mark.parametrize(("card", "status", "code"), CASES, ids=["success", "decline", "no-funds"])
async def test_post_with_prefer_wait(
    stack: Stack, card: str, status: str, code: str | None
) -> None:
    async with stack.session() as session:
        async with session.post(
            "/v1/payments", json=_body(card), headers={"Prefer": "wait=20"}
        ) as response:
            assert response.status == 200, await response.text()
            assert response.headers["Preference-Applied"] == "wait=20"
            payment = await response.json()
        assert payment["status"] == status
        if code is not None:
            assert payment["error"]["code"] == code
        # The same result is what a later query returns.
        async with session.get(f"/v1/payments/{payment['paymentRequestId']}") as response:
            assert (await response.json())["status"] == status


async def test_a_retried_request_with_the_same_key_is_the_same_payment(stack: Stack) -> None:
    body = _body(SUCCESS_CARD)
    headers = {"Idempotency-Key": f"retry-{uuid.uuid4().hex}", "Prefer": "wait=20"}
    async with stack.session() as session:
        async with session.post("/v1/payments", json=body, headers=headers) as response:
            first = await response.json()
        async with session.post("/v1/payments", json=body, headers=headers) as response:
            assert response.status == 200
            assert response.headers["Idempotent-Replayed"] == "true"
            second = await response.json()
    assert first["paymentRequestId"] == second["paymentRequestId"]
    assert first["status"] == second["status"] == "succeeded"
    assert first["providerReference"] == second["providerReference"]


async def test_key_reuse_with_other_parameters_and_a_second_payment_are_refused(
    stack: Stack,
) -> None:
    body = _body(SUCCESS_CARD)
    key = f"reuse-{uuid.uuid4().hex}"
    async with stack.session() as session:
        async with session.post(
            "/v1/payments", json=body, headers={"Idempotency-Key": key, "Prefer": "wait=20"}
        ) as response:
            assert (await response.json())["status"] == "succeeded"
        changed = {**body, "amount": "26.00"}
        async with session.post(
            "/v1/payments", json=changed, headers={"Idempotency-Key": key}
        ) as response:
            assert response.status == 409
            assert (await response.json())["error"]["code"] == "idempotency_conflict"
        async with session.post(
            "/v1/payments", json=body, headers={"Idempotency-Key": f"{key}-again"}
        ) as response:
            assert response.status == 409
            assert (await response.json())["error"]["code"] == "order_already_paid"


async def test_any_facade_instance_sees_every_result(stack: Stack) -> None:
    # Created and awaited on the second instance, queried on the first.
    async with (
        stack.session(stack.second_url) as second,
        second.post(
            "/v1/payments", json=_body(SUCCESS_CARD), headers={"Prefer": "wait=20"}
        ) as response,
    ):
        assert response.status == 200, await response.text()
        created = await response.json()
    path = f"/v1/payments/{created['paymentRequestId']}"
    async with stack.session() as first, first.get(path) as response:
        assert (await response.json())["status"] == "succeeded"
