"""The facade's notification endpoint without a provider behind it: public, each provider's
media type only, refusals answered from the catalogue, and the provider's acknowledgement
(Alipay: the text ``success``; Stripe: JSON) only when the sink recorded it."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from domain.money import Money
from http_facade.state import METRICS
from providers.alipay.notifications import ALIPAY_TERMS
from providers.notices import (
    ChargeNotice,
    NoticeRefusedError,
    NoticeResult,
    ReceivedNotification,
    RefusalReason,
)
from providers.stripe.webhooks import STRIPE_TERMS
from tests.support.facade_world import World, database_refused, world_client

pytestmark = pytest.mark.unit

PATH = "/v1/notifications/alipay"


class Reader:
    provider = "alipay"
    terms = ALIPAY_TERMS

    def receive(self, notification: ReceivedNotification) -> ChargeNotice:
        return self.read(notification.form)

    def read(self, params: Mapping[str, str]) -> ChargeNotice:
        if params.get("sign") != "good":
            raise NoticeRefusedError(
                "the notification is not signed by Alipay", RefusalReason.SIGNATURE
            )
        return ChargeNotice("alipay", params["out_trade_no"], None, Money(1000, "CNY"))


class Sink:
    def __init__(self, result: NoticeResult) -> None:
        self.result = result
        self.notices: list[ChargeNotice] = []

    async def record(self, notice: ChargeNotice) -> NoticeResult:
        self.notices.append(notice)
        return self.result


@pytest.mark.parametrize(
    ("result", "status", "text"),
    [
        (NoticeResult.RECORDED, 200, "success"),
        (NoticeResult.ALREADY, 200, "success"),
        (NoticeResult.IGNORED, 200, "success"),
        (NoticeResult.MISMATCH, 400, "invalid_request"),
        (NoticeResult.UNKNOWN, 404, "not_found"),
        (NoticeResult.BUSY, 503, "service_unavailable"),
    ],
)
async def test_answers_follow_what_the_sink_did(result, status, text):
    sink = Sink(result)
    client = await world_client(World(), notice_readers={"alipay": Reader()}, notice_sink=sink)
    try:
        # No API key: the provider signs instead.
        response = await client.post(PATH, data={"sign": "good", "out_trade_no": "pay_1-a1"})
        assert response.status == status
        body = await response.text()
        assert body == text if status == 200 else text in body
        assert [n.attempt_key for n in sink.notices] == ["pay_1-a1"]
        if status == 503:
            assert response.headers["Retry-After"] == "1"
    finally:
        await client.close()


async def test_refused_before_the_sink_unsigned_json_or_another_provider():
    sink = Sink(NoticeResult.RECORDED)
    client = await world_client(World(), notice_readers={"alipay": Reader()}, notice_sink=sink)
    try:
        assert (await client.post(PATH, data={"sign": "forged"})).status == 400
        assert (await client.post(PATH, json={"sign": "good"})).status == 415
        other = await client.post("/v1/notifications/paypal", data={"sign": "good"})
        assert other.status == 404
        assert sink.notices == []
    finally:
        await client.close()


STRIPE_PATH = "/v1/notifications/stripe"


class StripeReader:
    """Signed means the header says ``good``; an event of ``customer.created`` is not read."""

    provider = "stripe"
    terms = STRIPE_TERMS

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def receive(self, notification: ReceivedNotification) -> ChargeNotice | None:
        self.bodies.append(notification.body)
        if notification.header("Stripe-Signature") != "good":
            raise NoticeRefusedError("the event is not signed for this endpoint")
        if b"customer.created" in notification.body:
            return None
        return ChargeNotice("stripe", "pay_1-a1", None, Money(1050, "EUR"))


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (NoticeResult.RECORDED, 200),
        (NoticeResult.ALREADY, 200),
        (NoticeResult.IGNORED, 200),
        (NoticeResult.STRAY, 200),
        # Stripe sends every event of the account: a key no payment here has is another
        # system's, acknowledged rather than resent for days.
        (NoticeResult.UNKNOWN, 200),
        (NoticeResult.MISMATCH, 400),
        (NoticeResult.BUSY, 503),
    ],
)
async def test_stripe_is_answered_in_json(result, status):
    sink = Sink(result)
    stripe = StripeReader()
    client = await world_client(
        World(), notice_readers={"alipay": Reader(), "stripe": stripe}, notice_sink=sink
    )
    try:
        body = b'{"type": "payment_intent.succeeded"}'
        response = await client.post(
            STRIPE_PATH,
            data=body,
            headers={"Content-Type": "application/json", "Stripe-Signature": "good"},
        )
        assert response.status == status
        assert response.content_type == "application/json"
        answer = await response.json()
        if status == 200:
            assert answer == {"received": True}
        else:
            assert answer["error"]["code"] in ("invalid_request", "service_unavailable")
        assert stripe.bodies == [body]  # the raw body, byte for byte
        assert [n.attempt_key for n in sink.notices] == ["pay_1-a1"]
    finally:
        await client.close()


async def test_stripe_refusals_and_events_with_nothing_to_record():
    sink = Sink(NoticeResult.RECORDED)
    readers = {"alipay": Reader(), "stripe": StripeReader()}
    client = await world_client(World(), notice_readers=readers, notice_sink=sink)
    try:
        forged = await client.post(
            STRIPE_PATH,
            data=b'{"secret": "payload"}',
            headers={"Content-Type": "application/json", "Stripe-Signature": "forged"},
        )
        assert forged.status == 400
        error = (await forged.json())["error"]
        assert (error["code"], error["param"]) == ("invalid_request", "Stripe-Signature")
        assert "payload" not in await forged.text()
        as_form = await client.post(STRIPE_PATH, data={"type": "payment_intent.succeeded"})
        assert as_form.status == 415
        not_read = await client.post(
            STRIPE_PATH,
            data=b'{"type": "customer.created"}',
            headers={"Content-Type": "application/json", "Stripe-Signature": "good"},
        )
        assert (not_read.status, await not_read.json()) == (200, {"received": True})
        assert sink.notices == []
        # Alipay's answers stay Alipay's beside Stripe's.
        alipay = await client.post(PATH, data={"sign": "good", "out_trade_no": "pay_2-a1"})
        assert (alipay.status, await alipay.text()) == (200, "success")
    finally:
        await client.close()


class DownSink:
    """The store behind the sink cannot be reached: the claim's first read fails."""

    def __init__(self) -> None:
        self.calls = 0

    async def record(self, notice: ChargeNotice) -> NoticeResult:
        self.calls += 1
        raise database_refused()


@pytest.mark.parametrize(("path", "reader"), [(PATH, "alipay"), (STRIPE_PATH, "stripe")])
async def test_a_database_outage_while_recording_is_the_stable_503(path, reader):
    # Guard: http_facade.database_guard.GuardedNotices (without it, a 500 and a traceback
    # per notification, the driver's message in the log).
    sink = DownSink()
    readers = {"alipay": Reader(), "stripe": StripeReader()}
    client = await world_client(World(), notice_readers=readers, notice_sink=sink)
    try:
        if reader == "alipay":
            response = await client.post(path, data={"sign": "good", "out_trade_no": "pay_1-a1"})
        else:
            response = await client.post(
                path,
                data=b'{"type": "payment_intent.succeeded"}',
                headers={"Content-Type": "application/json", "Stripe-Signature": "good"},
            )
        assert response.status == 503
        assert response.headers["Retry-After"]
        answer = await response.json()
        assert answer["error"]["code"] == "service_unavailable"
        assert "5432" not in json.dumps(answer)  # the driver's words stay out of the answer
        assert sink.calls == 1
    finally:
        await client.close()


def refused_counts(client) -> dict[tuple[str, str], float]:
    """Every series of the refusals' counter: (provider, reason) -> count."""
    counts = {}
    for family in client.server.app[METRICS].registry.collect():
        if family.name != "paygate_provider_notifications_refused":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                counts[sample.labels["provider"], sample.labels["reason"]] = sample.value
    return counts


async def test_refusals_are_counted_by_provider_and_a_fixed_reason_nothing_of_the_payload():
    """Before, a refused notification left only a log line: Stripe resends it for three
    days and nothing counted it. Every series exists from 0 (the alert sees the first)."""
    sink = Sink(NoticeResult.RECORDED)
    client = await world_client(World(), notice_readers={"alipay": Reader()}, notice_sink=sink)
    try:
        assert set(refused_counts(client).values()) == {0.0}
        assert {reason for _, reason in refused_counts(client)} == {r.value for r in RefusalReason}
        assert (await client.post(PATH, data={"sign": "forged", "out_trade_no": "x"})).status == 400
        assert (await client.post(PATH, json={"sign": "good"})).status == 415
        assert (await client.post("/v1/notifications/paypal", data={"sign": "good"})).status == 404
        sink.result = NoticeResult.MISMATCH
        assert (await client.post(PATH, data={"sign": "good", "out_trade_no": "a"})).status == 400
        sink.result = NoticeResult.UNKNOWN
        assert (await client.post(PATH, data={"sign": "good", "out_trade_no": "b"})).status == 404
        sink.result = NoticeResult.RECORDED
        assert (await client.post(PATH, data={"sign": "good", "out_trade_no": "c"})).status == 200

        counted = {key: value for key, value in refused_counts(client).items() if value}
        assert counted == {
            ("alipay", "signature"): 1,
            ("alipay", "media_type"): 1,
            ("alipay", "mismatch"): 1,
            ("alipay", "unknown_payment"): 1,
        }
        # Only configured providers and the fixed reasons: no label from the request.
        assert {provider for provider, _ in refused_counts(client)} == {"alipay"}
    finally:
        await client.close()
