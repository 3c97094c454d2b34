"""Webhooks end to end: a REST client registers an endpoint, pays and refunds over HTTPS,
and its receiver gets each result, signed and verified with ``standardwebhooks``.

The stack is the e2e one (real broker, the consumer and facades as processes, SQLite and
PostgreSQL); the consumer's dispatcher delivers. The receiver runs in the test, on
loopback over http, which development allows.
"""

from __future__ import annotations

import uuid

import pytest

from domain.events import refund_event_id, result_event_id
from domain.refunds import RefundStatus
from domain.status import PaymentStatus
from domain.webhook_events import webhook_event_id
from tests.support.builders import DECLINED_CARD, SUCCESS_CARD
from tests.support.stack import Stack, payment_body
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

WAIT = {"Prefer": "wait=20"}
EVENTS = ["payment.succeeded", "payment.failed", "refund.succeeded"]


async def test_a_payment_and_a_refund_reach_the_clients_endpoint_signed(
    stack: Stack, receiver: WebhookReceiver
) -> None:
    async with stack.session() as session:
        registration = {"url": receiver.url, "enabledEvents": EVENTS}
        async with session.post("/v1/webhook_endpoints", json=registration) as response:
            assert response.status == 201, await response.text()
            endpoint = await response.json()
        receiver.secret = endpoint["secret"]
        try:
            async with session.post(
                "/v1/payments", json=payment_body(SUCCESS_CARD), headers=WAIT
            ) as response:
                assert response.status == 200, await response.text()
                paid = (await response.json())["paymentRequestId"]
            await receiver.wait_for(1)
            [succeeded] = receiver.received
            assert succeeded.body["type"] == "payment.succeeded"
            assert succeeded.body["data"]["paymentRequestId"] == paid
            assert succeeded.webhook_id == webhook_event_id(
                result_event_id(paid, PaymentStatus.SUCCEEDED)
            )

            async with session.post(
                f"/v1/payments/{paid}/refunds",
                json={"amount": "5.00", "currency": "EUR"},
                headers={**WAIT, "Idempotency-Key": f"refund-{uuid.uuid4().hex}"},
            ) as response:
                assert response.status == 200, await response.text()
                refund = (await response.json())["refundId"]
            async with session.post(
                "/v1/payments", json=payment_body(DECLINED_CARD), headers=WAIT
            ) as response:
                declined = (await response.json())["paymentRequestId"]
            await receiver.wait_for(3)
            by_type = {r.body["type"]: r for r in receiver.received}
            assert by_type["refund.succeeded"].webhook_id == webhook_event_id(
                refund_event_id(refund, RefundStatus.SUCCEEDED)
            )
            assert by_type["refund.succeeded"].body["data"]["amount"] == "5.00"
            assert by_type["payment.failed"].body["data"]["paymentRequestId"] == declined
            assert receiver.refused == []

            # Visible, and re-sent on request with the same webhook-id.
            deliveries_path = f"/v1/webhook_endpoints/{endpoint['id']}/deliveries"
            async with session.get(deliveries_path) as response:
                deliveries = (await response.json())["data"]
            first = next(d for d in deliveries if d["eventId"] == succeeded.webhook_id)
            assert (first["status"], first["attempts"], first["lastResponseCode"]) == (
                "delivered",
                1,
                200,
            )
            async with session.post(f"{deliveries_path}/{first['id']}/retry") as response:
                assert response.status == 202, await response.text()
            await receiver.wait_for(4)
            assert receiver.received[3].webhook_id == succeeded.webhook_id

            # Another client sees none of it.
            async with (
                stack.session(other_client=True) as other,
                other.get(deliveries_path) as response,
            ):
                assert response.status == 404
        finally:
            async with session.delete(f"/v1/webhook_endpoints/{endpoint['id']}") as response:
                assert response.status == 200
