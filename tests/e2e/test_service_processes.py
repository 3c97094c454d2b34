"""The whole service as separate processes: HTTPS in, Kafka in the middle, results out.

The stack (tests/e2e/conftest.py) runs the sandbox acquirer, the consumer and two facades
as ``paygate`` processes against the session's real broker, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import uuid

import pytest

from tests.support.builders import DECLINED_CARD, INSUFFICIENT_FUNDS_CARD, SUCCESS_CARD
from tests.support.stack import Stack, payment_body, poll_final

pytestmark = pytest.mark.e2e

CASES = [
    (SUCCESS_CARD, "succeeded", None),
    (DECLINED_CARD, "failed", "payment_declined"),
    (INSUFFICIENT_FUNDS_CARD, "failed", "insufficient_funds"),
]


@pytest.mark.parametrize(("card", "status", "code"), CASES, ids=["success", "decline", "no-funds"])
async def test_post_then_get(stack: Stack, card: str, status: str, code: str | None) -> None:
    async with stack.session() as session:
        async with session.post("/v1/payments", json=payment_body(card)) as response:
            assert response.status == 202
            accepted = await response.json()
        assert accepted["status"] == "pending"
        assert accepted["paymentResult"] is False
        payment = await poll_final(session, accepted["paymentRequestId"])
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
            "/v1/payments", json=payment_body(card), headers={"Prefer": "wait=20"}
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
    body = payment_body(SUCCESS_CARD)
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
    body = payment_body(SUCCESS_CARD)
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
            "/v1/payments", json=payment_body(SUCCESS_CARD), headers={"Prefer": "wait=20"}
        ) as response,
    ):
        assert response.status == 200, await response.text()
        created = await response.json()
    path = f"/v1/payments/{created['paymentRequestId']}"
    async with stack.session() as first, first.get(path) as response:
        assert (await response.json())["status"] == "succeeded"


async def test_a_request_without_a_key_is_refused(stack: Stack) -> None:
    async with (
        stack.session(with_key=False) as session,
        session.post("/v1/payments", json=payment_body(SUCCESS_CARD)) as response,
    ):
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await response.json())["error"]["code"] == "authentication_failed"


async def test_every_facade_is_ready_with_its_database_kafka_and_result_listener(
    stack: Stack,
) -> None:
    for url in (None, stack.second_url):
        async with (
            stack.session(url, with_key=False) as session,
            session.get("/readyz") as response,
        ):
            assert response.status == 200, await response.text()
            assert await response.json() == {
                "status": "ready",
                "checks": {"database": "ok", "kafka": "ok", "result_listener": "ok"},
            }
