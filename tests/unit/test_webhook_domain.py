"""Webhook rules without I/O: event types and ids, the retry schedule, the address policy,
and the dispatcher's fairness between endpoints (with a fake queue and sender)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.events import PaymentResult, RefundResult, result_event_id
from domain.refunds import RefundStatus
from domain.status import PaymentStatus
from domain.webhook_events import (
    WebhookEvent,
    event_types,
    payment_webhook,
    refund_webhook,
    subscribed,
    webhook_event_id,
)
from domain.webhook_retry import RetryPolicy
from domain.webhook_urls import UrlRefusedError, address_refusal, parse_endpoint_url
from persistence.webhook_secrets import StoredSecret
from persistence.webhook_store import DueDelivery
from producer.webhook_dispatcher import CANNOT_SIGN, WebhookDispatcher
from producer.webhook_sender import SendOutcome
from telemetry.metrics import Metrics
from tests.support.result_events import payment_result, refund_result

pytestmark = pytest.mark.unit

PAYMENT_ID = "pay_" + "a" * 32
T0 = datetime(2026, 12, 1, tzinfo=UTC)


# --- events ----------------------------------------------------------------------------------


def _payment_event(result: PaymentResult) -> WebhookEvent:
    event = payment_webhook(result)
    assert event is not None
    return event


def _refund_event(result: RefundResult) -> WebhookEvent:
    event = refund_webhook(result)
    assert event is not None
    return event


def test_a_reply_to_a_refused_command_is_no_webhook() -> None:
    """A key reused with other parameters says nothing of the payment it names."""
    conflict = ErrorInfo(ErrorCode.IDEMPOTENCY_CONFLICT, "reused")
    refused = replace(payment_result(PAYMENT_ID), error=conflict, refusal=True)
    assert payment_webhook(refused) is None
    assert refund_webhook(replace(refund_result("ref_1"), error=conflict, refusal=True)) is None
    declined = ErrorInfo(ErrorCode.PAYMENT_DECLINED, "declined")
    failed = replace(payment_result(PAYMENT_ID, PaymentStatus.FAILED), error=declined)
    assert payment_webhook(failed) is not None


@pytest.mark.parametrize("status", list(PaymentStatus))
def test_every_payment_status_is_a_type_named_after_it(status: PaymentStatus) -> None:
    event = _payment_event(payment_result(PAYMENT_ID, status))
    assert event.type == f"payment.{status.value}"
    assert event.type in event_types()
    body = json.loads(event.body)
    assert (body["type"], body["data"]["status"], body["data"]["object"]) == (
        event.type,
        status.value,
        "payment",
    )


@pytest.mark.parametrize("status", list(RefundStatus))
def test_every_refund_status_is_a_type_named_after_it(status: RefundStatus) -> None:
    event = _refund_event(refund_result("ref_" + "b" * 32, status))
    assert event.type == f"refund.{status.value}"
    assert event.type in event_types()
    data = json.loads(event.body)["data"]
    assert (data["amount"], data["paymentRefundedAmount"], data["currency"]) == (
        "10.50",
        "10.50",
        "EUR",
    )


def test_the_event_id_is_the_result_events_so_a_republished_result_keeps_it() -> None:
    first = _payment_event(payment_result(PAYMENT_ID))
    again = _payment_event(payment_result(PAYMENT_ID))
    assert first == again
    expected = webhook_event_id(result_event_id(PAYMENT_ID, PaymentStatus.SUCCEEDED))
    assert first.event_id == expected
    assert first.event_id.startswith("evt_")
    failed = _payment_event(payment_result(PAYMENT_ID, PaymentStatus.FAILED))
    assert failed.event_id != first.event_id


def test_the_body_is_byte_for_byte_what_it_was_when_rendered_at_once() -> None:
    """Rendering the body lazily (most events go to no endpoint) changed no byte of it:
    receivers verify signatures over these bytes, so they must not drift."""
    body = _payment_event(payment_result(PAYMENT_ID)).body
    assert body == (
        '{"data":{"amount":"10.50","capturedAmount":null,"createdAt":"2026-11-26T12:00:00Z",'
        '"currency":"EUR","error":null,"object":"payment","orderId":"order-1",'
        '"paymentRequestId":"pay_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","paymentResult":true,'
        '"provider":"sandbox","providerReference":"ch_1","status":"succeeded",'
        '"userId":"user-1"},"timestamp":"2026-11-26T12:00:00Z","type":"payment.succeeded"}'
    )


def test_a_lazy_body_is_rendered_once_on_first_read_and_then_kept() -> None:
    renders: list[str] = []

    def render() -> str:
        renders.append("body")
        return '{"type":"payment.succeeded"}'

    event = WebhookEvent("evt_1", "payment.succeeded", PAYMENT_ID, render=render)
    assert renders == []
    assert event.body == event.body == '{"type":"payment.succeeded"}'
    assert renders == ["body"]
    assert event == WebhookEvent(
        "evt_1", "payment.succeeded", PAYMENT_ID, '{"type":"payment.succeeded"}'
    )


def test_a_webhook_event_needs_exactly_one_of_body_and_render() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        WebhookEvent("evt_1", "payment.succeeded", PAYMENT_ID)
    with pytest.raises(ValueError, match="exactly one"):
        WebhookEvent("evt_1", "payment.succeeded", PAYMENT_ID, "{}", render=lambda: "{}")


def test_the_body_follows_the_standard_webhooks_payload_structure() -> None:
    body = json.loads(_payment_event(payment_result(PAYMENT_ID)).body)
    assert set(body) == {"type", "timestamp", "data"}
    assert body["timestamp"] == "2026-11-26T12:00:00Z"
    assert (body["data"]["amount"], body["data"]["paymentResult"]) == ("10.50", True)


def test_subscriptions() -> None:
    assert subscribed(["*"], "payment.requires_action")
    assert subscribed(["payment.failed"], "payment.failed")
    assert not subscribed(["payment.failed"], "payment.succeeded")


# --- the retry schedule ------------------------------------------------------------------------


def test_delays_double_from_the_base_up_to_the_cap() -> None:
    policy = RetryPolicy()
    delays = [
        policy.next_attempt(created_at=T0, failed_at=T0, attempts=n, uniform=lambda a, b: 1.0)
        for n in range(1, 16)
    ]
    gaps = [d - T0 for d in delays if d is not None]
    assert gaps[:3] == [policy.base, 2 * policy.base, 4 * policy.base]
    assert max(gaps) == policy.cap


@given(draws=st.lists(st.floats(0.0, 1.0), min_size=200, max_size=200))
def test_whatever_the_jitter_a_delivery_is_retried_for_the_whole_window(
    draws: list[float],
) -> None:
    policy = RetryPolicy()
    jitter = iter(draws)

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * next(jitter)

    now, attempts = T0, 1
    while True:
        following = policy.next_attempt(
            created_at=T0, failed_at=now, attempts=attempts, uniform=uniform
        )
        if following is None:
            break
        assert following > now
        now, attempts = following, attempts + 1
    # Given up only by an attempt at (or after) the window's end: a day of retries.
    assert now >= T0 + policy.window
    assert attempts < 40


# --- addresses and URLs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "development", "allowed"),
    [
        ("93.184.215.14", False, True),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", False, True),
        ("127.0.0.1", False, False),
        ("127.0.0.1", True, True),
        ("::1", True, True),
        ("10.1.2.3", True, False),
        ("172.16.0.1", False, False),
        ("192.168.0.1", False, False),
        ("169.254.169.254", True, False),
        ("fe80::1", False, False),
        ("fd00:ec2::254", False, False),
        ("::ffff:169.254.169.254", False, False),
        ("100.64.0.1", False, False),
        ("0.0.0.0", False, False),  # noqa: S104 (an address judged, not bound)
        ("224.0.0.1", False, False),
    ],
)
def test_address_policy(address: str, development: bool, allowed: bool) -> None:
    refusal = address_refusal(ipaddress.ip_address(address), development=development)
    assert (refusal is None) is allowed


@pytest.mark.parametrize(
    "url",
    ["http://hooks.example/in", "https://u:p@hooks.example/in", "https:///in", "https://h/#x"],
)
def test_urls_refused_outside_development(url: str) -> None:
    with pytest.raises(UrlRefusedError):
        parse_endpoint_url(url, development=False)


def test_a_url_is_parsed_with_its_default_port() -> None:
    assert parse_endpoint_url("https://hooks.example/in", development=False).port == 443
    assert parse_endpoint_url("http://127.0.0.1:81/in", development=True).port == 81


# --- the dispatcher's fairness -------------------------------------------------------------------


class Queue:
    """Due deliveries: ``slow`` has many, ``fast`` one; claims honour the per-endpoint bound
    as the real store does."""

    def __init__(self) -> None:
        self.due = [_due(f"s{n}", "slow") for n in range(20)] + [_due("f0", "fast")]
        self.recorded: list[tuple[str, bool]] = []
        self.errors: list[str | None] = []

    async def claim_due(
        self, limit: int, *, per_endpoint: int, in_flight: Mapping[str, int], lease: timedelta
    ) -> list[DueDelivery]:
        room = {e: per_endpoint - n for e, n in in_flight.items()}
        taken: list[DueDelivery] = []
        for delivery in list(self.due):
            if len(taken) < limit and room.get(delivery.endpoint_id, per_endpoint) > 0:
                room[delivery.endpoint_id] = room.get(delivery.endpoint_id, per_endpoint) - 1
                taken.append(delivery)
                self.due.remove(delivery)
        return taken

    async def record_attempt(
        self,
        delivery: DueDelivery,
        *,
        delivered: bool,
        status_code: int | None,
        error: str | None,
        next_attempt_at: datetime | None,
    ) -> bool:
        self.recorded.append((delivery.id, delivered))
        self.errors.append(error)
        return True

    async def secret_of(self, delivery: DueDelivery) -> str:
        return SECRET


SECRET = "whsec_" + "A" * 44


def _due(delivery_id: str, endpoint_id: str) -> DueDelivery:
    return DueDelivery(
        id=delivery_id,
        endpoint_id=endpoint_id,
        url=f"https://{endpoint_id}.example/in",
        event_id=f"evt_{delivery_id}",
        attempts=0,
        created_at=T0,
        token="t",
        secret=StoredSecret("dk_test", b"sealed", None),
        payload="{}",
    )


class Sender:
    """The slow endpoint never answers (until the test ends); the fast one at once."""

    def __init__(self) -> None:
        self.slow_calls = 0
        self.fast_delivered = asyncio.Event()

    async def send(self, *, url: str, secret: str, event_id: str, payload: str) -> SendOutcome:
        if "slow" in url:
            self.slow_calls += 1
            await asyncio.Event().wait()
        self.fast_delivered.set()
        return SendOutcome(True, 200, None)


async def test_a_hanging_endpoint_holds_its_share_of_places_and_no_more() -> None:
    queue, sender = Queue(), Sender()
    dispatcher = WebhookDispatcher(
        queue, sender, Metrics(), max_in_flight=4, per_endpoint=2, poll_s=0.01
    )
    run = asyncio.create_task(dispatcher.run())
    try:
        # The fast endpoint's delivery goes although the slow one has 20 due ahead of it.
        await asyncio.wait_for(sender.fast_delivered.wait(), 10)
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    assert sender.slow_calls == 2
    assert queue.recorded == [("f0", True)]
    assert len([d for d in queue.due if d.endpoint_id == "slow"]) == 18


def test_due_delivery_keeps_its_secret_out_of_repr() -> None:
    delivery = replace(_due("x", "e"), secret=StoredSecret(None, None, SECRET))
    assert "whsec_" not in repr(delivery)
    assert "whsec_" not in repr(replace(delivery, payload="p"))
    assert "sealed" not in repr(_due("x", "e"))


class _RetiredKey(Queue):
    """One delivery, whose secret is under a data key the vault no longer holds."""

    def __init__(self) -> None:
        super().__init__()
        self.due = [_due("r0", "fast")]

    async def secret_of(self, delivery: DueDelivery) -> str:
        raise PaygateError(ErrorCode.ENCRYPTION_KEY_UNKNOWN, "no data key with id 'dk_test'")


async def test_a_secret_that_does_not_open_fails_the_attempt_without_sending(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue, sender, metrics = _RetiredKey(), Sender(), Metrics()
    dispatcher = WebhookDispatcher(queue, sender, metrics, clock=lambda: T0)
    with caplog.at_level(logging.ERROR, logger="paygate.webhooks"):
        assert await dispatcher.dispatch_once() == 1
    assert queue.recorded == [("r0", False)]
    # The client reads a stable message; the data key's id is the operator's, in the log.
    assert queue.errors == [CANNOT_SIGN]
    assert "dk_test" not in CANNOT_SIGN
    [logged] = [
        r for r in caplog.records if r.getMessage() == "webhook signing secret does not open"
    ]
    assert logged.__dict__["error"] == "encryption_key_unknown: no data key with id 'dk_test'"
    assert not sender.fast_delivered.is_set()
    assert metrics.webhook_attempts.labels("secret_unavailable")._value.get() == 1


def test_the_documented_event_type_pattern_covers_every_type() -> None:
    """The OpenAPI document names types by pattern, so new statuses need no change there."""
    import re

    from http_facade.openapi_routes import openapi_document

    pattern = openapi_document()["components"]["schemas"]["WebhookEventType"]["pattern"]
    assert all(re.search(pattern, t) for t in [*event_types(), "*"])
    assert not re.search(pattern, "charge.succeeded")


class _NothingDue(Queue):
    """No delivery is ever due; says when the dispatcher has looked."""

    def __init__(self) -> None:
        super().__init__()
        self.due = []
        self.looked = asyncio.Event()

    async def claim_due(
        self, limit: int, *, per_endpoint: int, in_flight: Mapping[str, int], lease: timedelta
    ) -> list[DueDelivery]:
        self.looked.set()
        return []


async def test_a_stopped_dispatcher_leaves_no_task_behind() -> None:
    queue = _NothingDue()
    dispatcher = WebhookDispatcher(queue, Sender(), Metrics(), poll_s=3600)
    run = asyncio.create_task(dispatcher.run())
    # Once it has looked, the dispatcher waits (for a notification or the poll) until
    # the service stops it by cancelling it.
    await queue.looked.wait()
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    # Whatever it started is over, or told to end (the loop runs its cancellation next).
    left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert [t for t in left if not t.done() and not t.cancelling()] == []
