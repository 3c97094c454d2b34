"""Authorize, then capture, over HTTPS through Kafka and the consumer and sandbox processes."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.support.builders import SUCCESS_CARD
from tests.support.stack import Stack, payment_body

pytestmark = pytest.mark.e2e


async def _status_becomes(
    session: aiohttp.ClientSession, payment_id: str, wanted: str
) -> dict[str, Any]:
    for _ in range(300):
        async with session.get(f"/v1/payments/{payment_id}") as response:
            body: dict[str, Any] = await response.json()
        if body.get("status") == wanted:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{payment_id} never became {wanted}: {body}")


async def test_authorize_then_capture_then_refund(stack: Stack) -> None:
    body = {**payment_body(SUCCESS_CARD), "capture": False}
    async with stack.session() as session:
        async with session.post("/v1/payments", json=body, headers={"Prefer": "wait=20"}) as r:
            assert r.status == 200, await r.text()
            authorized = await r.json()
        assert (authorized["status"], authorized["paymentResult"]) == ("authorized", False)
        payment_id = authorized["paymentRequestId"]

        # Held, not taken: nothing to refund yet, and the order is not open to a second charge.
        refunds = f"/v1/payments/{payment_id}/refunds"
        async with session.post(refunds, json={}, headers={"Idempotency-Key": "early"}) as r:
            assert (r.status, (await r.json())["error"]["code"]) == (
                409,
                "payment_not_refundable",
            )

        async with session.post(f"/v1/payments/{payment_id}/capture") as r:
            assert r.status == 202, await r.text()
            assert (await r.json())["status"] == "capturing"
        captured = await _status_becomes(session, payment_id, "succeeded")
        assert captured["paymentResult"] is True
        assert captured["providerReference"] == authorized["providerReference"]

        # Capturing again is a replay, not a second capture.
        async with session.post(f"/v1/payments/{payment_id}/capture") as r:
            assert (r.status, (await r.json())["status"]) == (200, "succeeded")
        async with session.post(
            refunds, json={}, headers={"Prefer": "wait=20", "Idempotency-Key": "all"}
        ) as r:
            assert (r.status, (await r.json())["status"]) == (200, "succeeded")
        refunded = await _status_becomes(session, payment_id, "refunded")
        assert refunded["refundedAmount"] == refunded["amount"]


async def test_only_an_authorized_payment_can_be_captured(stack: Stack) -> None:
    async with stack.session() as session:
        async with session.post(
            "/v1/payments", json=payment_body(SUCCESS_CARD), headers={"Prefer": "wait=20"}
        ) as r:
            paid = await r.json()
        # Captured at once (the default): capturing it answers the payment.
        async with session.post(f"/v1/payments/{paid['paymentRequestId']}/capture") as r:
            assert (r.status, (await r.json())["status"]) == (200, "succeeded")
        async with (
            stack.session(other_client=True) as theirs,
            theirs.post(f"/v1/payments/{paid['paymentRequestId']}/capture") as r,
        ):
            assert (r.status, (await r.json())["error"]["code"]) == (404, "not_found")


async def _authorized(session: aiohttp.ClientSession) -> dict[str, Any]:
    body = {**payment_body(SUCCESS_CARD), "capture": False}
    async with session.post("/v1/payments", json=body, headers={"Prefer": "wait=20"}) as r:
        assert r.status == 200, await r.text()
        authorized: dict[str, Any] = await r.json()
    assert authorized["status"] == "authorized"
    return authorized


async def test_a_partial_capture_then_a_refund_of_all_that_was_captured(stack: Stack) -> None:
    async with stack.session() as session:
        authorized = await _authorized(session)
        payment_id = authorized["paymentRequestId"]
        capture = f"/v1/payments/{payment_id}/capture"
        async with session.post(capture, json={"amount": "4.00"}) as r:
            assert (r.status, (await r.json())["status"]) == (202, "capturing"), await r.text()
        captured = await _status_becomes(session, payment_id, "succeeded")
        assert (captured["amount"], captured["capturedAmount"]) == (authorized["amount"], "4.00")
        assert captured["refundableAmount"] == "4.00"
        async with session.post(capture, json={"amount": "5.00"}) as r:
            assert (r.status, (await r.json())["error"]["code"]) == (409, "idempotency_conflict")
        refunds = f"/v1/payments/{payment_id}/refunds"
        async with session.post(
            refunds, json={}, headers={"Prefer": "wait=20", "Idempotency-Key": "all"}
        ) as r:
            refund = await r.json()
        assert (r.status, refund["status"], refund["amount"]) == (200, "succeeded", "4.00")
        refunded = await _status_becomes(session, payment_id, "refunded")
        assert refunded["refundedAmount"] == "4.00"


async def test_cancel_releases_the_hold_and_nothing_can_be_captured_after(stack: Stack) -> None:
    async with stack.session() as session:
        payment_id = (await _authorized(session))["paymentRequestId"]
        cancel = f"/v1/payments/{payment_id}/cancel"
        async with session.post(cancel) as r:
            assert (r.status, (await r.json())["status"]) == (202, "canceling"), await r.text()
        canceled = await _status_becomes(session, payment_id, "canceled")
        assert (canceled["paymentResult"], canceled["capturedAmount"]) == (False, None)
        async with session.post(cancel) as r:
            assert (r.status, (await r.json())["status"]) == (200, "canceled")
        async with session.post(f"/v1/payments/{payment_id}/capture") as r:
            assert (r.status, (await r.json())["error"]["code"]) == (409, "payment_not_capturable")
