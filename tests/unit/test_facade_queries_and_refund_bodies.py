"""The list query string and the refund body: shapes and values, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.refunds import RefundReason
from http_facade.list_query import DEFAULT_LIMIT, parse_list_query
from http_facade.refund_requests import parse_refund_body
from tests.support.builders import SUCCESS_CARD

pytestmark = pytest.mark.unit

PAYMENT_ID = "pay_" + "a" * 32
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_list_query_defaults_and_cursor():
    query = parse_list_query({"orderId": "order-1"})
    assert (query.order_id, query.limit, query.starting_after) == ("order-1", DEFAULT_LIMIT, None)
    query = parse_list_query({"orderId": "o", "limit": "100", "startingAfter": PAYMENT_ID})
    assert (query.limit, query.starting_after) == (100, PAYMENT_ID)


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({}, "orderId"),
        ({"orderId": ""}, "orderId"),
        ({"orderId": "a b"}, "orderId"),
        ({"orderId": "o", "limit": "0"}, "limit"),
        ({"orderId": "o", "limit": "101"}, "limit"),
        ({"orderId": "o", "limit": "-1"}, "limit"),
        ({"orderId": "o", "limit": "1e2"}, "limit"),
        ({"orderId": "o", "startingAfter": SUCCESS_CARD}, "startingAfter"),
        ({"orderId": "o", "offset": "5"}, "offset"),
    ],
)
def test_bad_list_queries_name_their_parameter(query, param):
    with pytest.raises(PaygateError) as refused:
        parse_list_query(query)
    assert (refused.value.code, refused.value.param) == (ErrorCode.INVALID_REQUEST, param)
    assert SUCCESS_CARD not in refused.value.message


def _command(raw: bytes):
    return parse_refund_body(raw).to_command(
        idempotency_key="k",
        payment_request_id=PAYMENT_ID,
        order_id="o",
        requested_at=NOW,
        client_id="client-1",
    )


@pytest.mark.parametrize("raw", [b"", b"  ", b"{}"])
def test_an_empty_refund_body_refunds_what_remains(raw):
    command = _command(raw)
    assert (command.amount, command.reason) == (None, None)


def test_a_partial_refund_body():
    command = _command(b'{"amount": "1.50", "currency": "EUR", "reason": "fraudulent"}')
    assert (command.amount, command.reason) == (Money(150, "EUR"), RefundReason.FRAUDULENT)


@pytest.mark.parametrize(
    ("raw", "code", "param"),
    [
        (b'{"amount": "1.50"}', ErrorCode.INVALID_REQUEST, "currency"),
        (b'{"currency": "EUR"}', ErrorCode.INVALID_REQUEST, "currency"),
        (b'{"amount": 1.5, "currency": "EUR"}', ErrorCode.INVALID_AMOUNT, "amount"),
        (b'{"amount": "1.505", "currency": "EUR"}', ErrorCode.INVALID_AMOUNT, "amount"),
        (b'{"amount": "0", "currency": "EUR"}', ErrorCode.INVALID_AMOUNT, "amount"),
        (b'{"amount": "1", "currency": "XXX"}', ErrorCode.UNSUPPORTED_CURRENCY, "currency"),
        (b'{"reason": "bored"}', ErrorCode.INVALID_REQUEST, "reason"),
        (b'{"reason": "other\\u0000"}', ErrorCode.INVALID_TEXT, "reason"),
        (b'{"reason": "\\ud800"}', ErrorCode.INVALID_TEXT, "reason"),
        (b'{"amount": "1", "currency": "EU\\u0000"}', ErrorCode.UNSUPPORTED_CURRENCY, "currency"),
        (b'{"amount": "1\\u0000", "currency": "EUR"}', ErrorCode.INVALID_AMOUNT, "amount"),
        (b'{"note": "x"}', ErrorCode.INVALID_REQUEST, "note"),
        (b"[]", ErrorCode.INVALID_REQUEST, None),
        (b'{"amount": "1", "amount": "2", "currency": "EUR"}', ErrorCode.INVALID_REQUEST, None),
    ],
)
def test_bad_refund_bodies_are_refused_with_their_code(raw, code, param):
    with pytest.raises(PaygateError) as refused:
        _command(raw)
    assert (refused.value.code, refused.value.param) == (code, param)


@pytest.mark.parametrize(
    ("order_id", "code"),
    [("order\x00", ErrorCode.INVALID_TEXT), ("o" * 65, ErrorCode.INVALID_REQUEST)],
)
def test_a_refunds_order_id_obeys_the_text_rule(order_id, code):
    with pytest.raises(PaygateError) as refused:
        parse_refund_body(b"{}").to_command(
            idempotency_key="k",
            payment_request_id=PAYMENT_ID,
            order_id=order_id,
            requested_at=NOW,
            client_id="client-1",
        )
    assert (refused.value.code, refused.value.param) == (code, "orderId")
