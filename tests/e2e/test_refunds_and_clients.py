"""Refunds and per-client isolation over HTTPS, through Kafka and the consumer process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest

from tests.support.builders import DECLINED_CARD, SUCCESS_CARD
from tests.support.stack import Stack, payment_body

pytestmark = pytest.mark.e2e

WAIT = {"Prefer": "wait=20"}


async def _paid(session: aiohttp.ClientSession, card: str = SUCCESS_CARD) -> dict[str, Any]:
    async with session.post("/v1/payments", json=payment_body(card), headers=WAIT) as response:
        assert response.status == 200, await response.text()
        payment: dict[str, Any] = await response.json()
    return payment


async def _refund(
    session: aiohttp.ClientSession,
    payment_id: str,
    body: dict[str, Any] | None,
    *,
    key: str | None = None,
    wait: bool = True,
) -> tuple[int, dict[str, Any], Mapping[str, str]]:
    headers = {"Idempotency-Key": key or f"refund-{uuid.uuid4().hex}"}
    if wait:
        headers.update(WAIT)
    async with session.post(
        f"/v1/payments/{payment_id}/refunds", json=body, headers=headers
    ) as response:
        return response.status, await response.json(), response.headers


def _code(body: dict[str, Any]) -> str:
    code: str = body["error"]["code"]
    return code


async def test_partial_multiple_and_full_refunds(stack: Stack) -> None:
    async with stack.session() as session:
        payment = await _paid(session)
        pid = payment["paymentRequestId"]
        status, first, headers = await _refund(
            session, pid, {"amount": "10.00", "currency": "EUR", "reason": "duplicate"}
        )
        assert status == 200, first
        assert headers["Location"] == f"/v1/refunds/{first['refundId']}"
        assert (first["status"], first["amount"], first["reason"]) == (
            "succeeded",
            "10.00",
            "duplicate",
        )
        assert first["providerReference"]
        status, second, _ = await _refund(session, pid, {"amount": "5.00", "currency": "EUR"})
        assert (status, second["status"]) == (200, "succeeded")
        async with session.get(f"/v1/payments/{pid}") as response:
            partly = await response.json()
        assert partly["status"] == "partially_refunded"
        assert (partly["refundedAmount"], partly["refundableAmount"]) == ("15.00", "10.00")
        assert [r["refundId"] for r in partly["refunds"]] == [first["refundId"], second["refundId"]]

        # No amount: all that remains.
        status, rest, _ = await _refund(session, pid, {})
        assert (status, rest["status"], rest["amount"]) == (200, "succeeded", "10.00")
        async with session.get(f"/v1/refunds/{rest['refundId']}") as response:
            assert (await response.json())["status"] == "succeeded"
        async with session.get(f"/v1/payments/{pid}") as response:
            refunded = await response.json()
        assert refunded["status"] == "refunded"
        assert (refunded["refundedAmount"], refunded["refundableAmount"]) == ("25.00", "0.00")
        assert refunded["paymentResult"] is True  # the charge itself succeeded


async def test_every_refund_error_has_its_code(stack: Stack) -> None:
    async with stack.session() as session:
        payment = await _paid(session)
        pid = payment["paymentRequestId"]
        declined = await _paid(session, DECLINED_CARD)

        # No body at all: allowed, it means "all that remains".
        status, body, _ = await _refund(session, declined["paymentRequestId"], None)
        assert (status, _code(body)) == (409, "payment_not_refundable")
        status, body, _ = await _refund(session, "pay_" + "0" * 32, {})
        assert (status, _code(body)) == (404, "not_found")
        status, body, _ = await _refund(session, pid, {"amount": "25.01", "currency": "EUR"})
        assert (status, _code(body), body["error"]["param"]) == (
            409,
            "refund_exceeds_captured",
            "amount",
        )
        status, body, _ = await _refund(session, pid, {"amount": "1.00", "currency": "USD"})
        assert (status, _code(body)) == (400, "currency_mismatch")
        status, body, _ = await _refund(session, pid, {"amount": "1.00"})
        assert (status, _code(body)) == (400, "invalid_request")
        status, body, _ = await _refund(session, pid, {"reason": "bored"})
        assert (status, _code(body), body["error"]["param"]) == (400, "invalid_request", "reason")
        # Without an Idempotency-Key a retry could not be told from a second refund.
        async with session.post(f"/v1/payments/{pid}/refunds", json={}, headers=WAIT) as r:
            body = await r.json()
            assert (r.status, _code(body), body["error"]["param"]) == (
                400,
                "invalid_request",
                "Idempotency-Key",
            )

        key = f"refund-{uuid.uuid4().hex}"
        status, body, _ = await _refund(
            session, pid, {"amount": "1.00", "currency": "EUR"}, key=key
        )
        assert status == 200
        status, replay, headers = await _refund(
            session, pid, {"amount": "1.00", "currency": "EUR"}, key=key
        )
        assert (status, replay["refundId"], headers["Idempotent-Replayed"]) == (
            200,
            body["refundId"],
            "true",
        )
        status, body, _ = await _refund(
            session, pid, {"amount": "2.00", "currency": "EUR"}, key=key
        )
        assert (status, _code(body)) == (409, "idempotency_conflict")
        # None of the refused requests changed anything.
        async with session.get(f"/v1/payments/{pid}") as response:
            after = await response.json()
        assert (after["refundedAmount"], len(after["refunds"])) == ("1.00", 1)


async def test_concurrent_refunds_never_exceed_the_payment(stack: Stack) -> None:
    """Ten 5.00 refunds of a 25.00 payment at once, through both facades: the facade's check
    passes for all of them, so the consumer's transaction is what refuses the extra ones."""
    async with stack.session() as first, stack.session(stack.second_url) as second:
        payment = await _paid(first)
        pid = payment["paymentRequestId"]
        sessions = [first, second] * 5
        answers = await asyncio.gather(
            *(_refund(s, pid, {"amount": "5.00", "currency": "EUR"}, wait=False) for s in sessions)
        )
        accepted = [body["refundId"] for status, body, _ in answers if status == 202]
        for refund_id in accepted:
            for _ in range(200):
                async with first.get(f"/v1/refunds/{refund_id}") as response:
                    if response.status == 200 and (await response.json())["status"] in (
                        "succeeded",
                        "failed",
                    ):
                        break
                await asyncio.sleep(0.1)
        async with first.get(f"/v1/payments/{pid}") as response:
            final = await response.json()
    succeeded = [r for r in final["refunds"] if r["status"] == "succeeded"]
    refused = [r for r in final["refunds"] if r["status"] == "failed"]
    assert len(succeeded) == 5
    assert final["status"] == "refunded"
    assert final["refundedAmount"] == "25.00"
    assert {r["error"]["code"] for r in refused} <= {"refund_exceeds_captured"}
    assert len(succeeded) + len(refused) == len(accepted)


async def test_another_clients_payments_and_refunds_are_not_found(stack: Stack) -> None:
    async with stack.session() as mine, stack.session(other_client=True) as theirs:
        payment = await _paid(mine)
        pid = payment["paymentRequestId"]
        status, refund, _ = await _refund(mine, pid, {"amount": "1.00", "currency": "EUR"})
        assert status == 200
        for path in (f"/v1/payments/{pid}", f"/v1/refunds/{refund['refundId']}"):
            async with theirs.get(path) as response:
                assert response.status == 404
                assert _code(await response.json()) == "not_found"
        status, body, _ = await _refund(theirs, pid, {})
        assert (status, _code(body)) == (404, "not_found")
        async with theirs.get("/v1/payments", params={"orderId": payment["orderId"]}) as response:
            assert (await response.json())["data"] == []
        # Nothing the other client tried changed the payment.
        async with mine.get(f"/v1/payments/{pid}") as response:
            assert (await response.json())["refundedAmount"] == "1.00"


async def test_idempotency_keys_and_orders_are_per_client(stack: Stack) -> None:
    body = payment_body(SUCCESS_CARD)
    headers = {"Idempotency-Key": f"shared-{uuid.uuid4().hex}", **WAIT}
    async with stack.session() as mine, stack.session(other_client=True) as theirs:
        async with mine.post("/v1/payments", json=body, headers=headers) as response:
            first = await response.json()
        # Same order id, same key, other client: a payment of its own, not a replay.
        async with theirs.post("/v1/payments", json=body, headers=headers) as response:
            assert response.status == 200
            assert "Idempotent-Replayed" not in response.headers
            second = await response.json()
    assert first["status"] == second["status"] == "succeeded"
    assert first["paymentRequestId"] != second["paymentRequestId"]


async def test_an_orders_payments_are_listed_page_by_page(stack: Stack) -> None:
    order_id = f"order-{uuid.uuid4().hex[:12]}"
    created = []
    async with stack.session() as session:
        for attempt in range(3):
            body = {**payment_body(DECLINED_CARD), "orderId": order_id}
            if attempt:
                body["newAttempt"] = True
            async with session.post("/v1/payments", json=body, headers=WAIT) as response:
                assert response.status == 200, await response.text()
                created.append((await response.json())["paymentRequestId"])
        listed: list[str] = []
        params = {"orderId": order_id, "limit": "2"}
        while True:
            async with session.get("/v1/payments", params=params) as response:
                assert response.status == 200
                page = await response.json()
            listed.extend(p["paymentRequestId"] for p in page["data"])
            if not page["hasMore"]:
                assert page["nextStartingAfter"] is None
                break
            params["startingAfter"] = page["nextStartingAfter"]
        async with session.get("/v1/payments", params={"limit": "2"}) as response:
            assert (response.status, _code(await response.json())) == (400, "invalid_request")
    assert listed == created
