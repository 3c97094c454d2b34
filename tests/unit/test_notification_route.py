"""The facade's notification endpoint without a provider behind it: public, form only,
refusals answered from the catalogue, and only ``success`` when the sink recorded it."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from domain.money import Money
from providers.notices import ChargeNotice, NoticeRefusedError, NoticeResult
from tests.support.facade_world import World, world_client

pytestmark = pytest.mark.unit

PATH = "/v1/notifications/alipay"


class Reader:
    provider = "alipay"

    def read(self, params: Mapping[str, str]) -> ChargeNotice:
        if params.get("sign") != "good":
            raise NoticeRefusedError("the notification is not signed by Alipay")
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
