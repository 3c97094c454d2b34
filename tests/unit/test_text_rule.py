"""The text rule (domain.text) and every command's text fields as the Avro intake decodes them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from domain.errors import ErrorCode, PaygateError
from domain.text import check_characters, check_text, forbidden_character
from schemas.payments import PaymentMessages
from tests.support.builders import (
    SUCCESS_CARD,
    encoded_capture,
    encoded_command,
    encoded_refund,
)

pytestmark = pytest.mark.unit

MESSAGES = PaymentMessages.bundled()


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("order-1", None),
        ("Zoë Ñandú", None),  # letters beyond ASCII are text
        ("\u00a0no-break space", None),
        ("emoji \U0001f600", None),  # a whole astral character, not a surrogate
        ("\ufeffbom", None),
        ("a\x00b", (1, "\x00")),
        ("\t", (0, "\t")),
        ("line\n", (4, "\n")),
        ("\x1f", (0, "\x1f")),
        ("\x7f", (0, "\x7f")),
        ("c1 \x85", (3, "\x85")),
        ("\x9f", (0, "\x9f")),
        ("x\ud800", (1, "\ud800")),
        ("\udfff", (0, "\udfff")),
        ("\ufdd0", (0, "\ufdd0")),
        ("\ufdef", (0, "\ufdef")),
        ("\ufffe", (0, "\ufffe")),
        ("\uffff", (0, "\uffff")),
        ("\U0001fffe", (0, "\U0001fffe")),
        ("\U0010ffff", (0, "\U0010ffff")),
    ],
)
def test_forbidden_characters_are_found_with_their_position(
    text: str, found: tuple[int, str] | None
) -> None:
    assert forbidden_character(text) == found


def test_a_forbidden_character_is_invalid_text_naming_the_code_point_not_the_value() -> None:
    with pytest.raises(PaygateError) as refused:
        check_characters("4242\x004242", "payerAccount.number")
    error = refused.value
    assert (error.code, error.param) == (ErrorCode.INVALID_TEXT, "payerAccount.number")
    assert "U+0000 at position 4" in error.message
    assert "4242" not in error.message


def test_check_characters_leaves_what_is_not_a_string_to_the_fields_own_rule() -> None:
    check_characters(42, "currency")
    check_characters(None, "reason")


@pytest.mark.parametrize(
    ("value", "code", "message"),
    [
        (7, ErrorCode.INVALID_REQUEST, "orderId must be a string"),
        ("", ErrorCode.INVALID_REQUEST, "orderId must be 1 to 64 characters"),
        ("o" * 65, ErrorCode.INVALID_REQUEST, "orderId must be 1 to 64 characters"),
        ("o\x00" + "o" * 70, ErrorCode.INVALID_TEXT, None),  # the character decides first
    ],
)
def test_check_text_refuses_types_lengths_and_characters(
    value: object, code: ErrorCode, message: str | None
) -> None:
    with pytest.raises(PaygateError) as refused:
        check_text(value, param="orderId", max_length=64)
    assert (refused.value.code, refused.value.param) == (code, "orderId")
    if message is not None:
        assert refused.value.message == message


def test_check_text_counts_code_points_and_may_allow_empty() -> None:
    assert check_text("é" * 64, param="orderId", max_length=64) == "é" * 64
    assert check_text("", param="x", min_length=0, max_length=5) == ""


# --- every command's text fields, through the Avro intake --------------------------------


def _account(**changes: Any) -> dict[str, Any]:
    return {"type": "card", "number": SUCCESS_CARD, "holderName": None, **changes}


CREATE_CASES: dict[str, tuple[dict[str, Any], ErrorCode, str]] = {
    "idempotency-key-nul": ({"idempotencyKey": "k\x00"}, ErrorCode.INVALID_TEXT, "idempotencyKey"),
    "user-id-control": ({"userId": "user\x01"}, ErrorCode.INVALID_TEXT, "userId"),
    "order-id-nul": ({"orderId": "order\x00"}, ErrorCode.INVALID_TEXT, "orderId"),
    # Amount and currency keep one code per field, whatever is wrong with them.
    "currency-nul": ({"currency": "EU\x00"}, ErrorCode.UNSUPPORTED_CURRENCY, "currency"),
    "method-c1": ({"paymentMethod": "card\x85"}, ErrorCode.INVALID_TEXT, "paymentMethod"),
    "account-type": (
        {"payerAccount": _account(type="card\x00")},
        ErrorCode.INVALID_TEXT,
        "payerAccount.type",
    ),
    "account-number": (
        {"payerAccount": _account(number=SUCCESS_CARD + "\x00")},
        ErrorCode.INVALID_TEXT,
        "payerAccount.number",
    ),
    "holder-name-newline": (
        {"payeeAccount": _account(holderName="Ada\nLovelace")},
        ErrorCode.INVALID_TEXT,
        "payeeAccount.holderName",
    ),
    "holder-name-too-long": (
        {"payerAccount": _account(holderName="A" * 141)},
        ErrorCode.INVALID_REQUEST,
        "payerAccount.holderName",
    ),
    "metadata-value-nul": (
        {"metadata": {"cart": "4\x002"}},
        ErrorCode.INVALID_TEXT,
        "metadata.cart",
    ),
    "metadata-value-noncharacter": (
        {"metadata": {"cart": "\uffff"}},
        ErrorCode.INVALID_TEXT,
        "metadata.cart",
    ),
    "metadata-key-control": ({"metadata": {"ca\x1brt": "42"}}, ErrorCode.INVALID_TEXT, "metadata"),
    "metadata-value-too-long": (
        {"metadata": {"cart": "x" * 501}},
        ErrorCode.INVALID_REQUEST,
        "metadata.cart",
    ),
    "metadata-key-too-long": ({"metadata": {"k" * 41: "v"}}, ErrorCode.INVALID_REQUEST, "metadata"),
    "client-id-nul": ({"clientId": "client\x00"}, ErrorCode.INVALID_TEXT, "clientId"),
    "order-id-too-long": ({"orderId": "o" * 65}, ErrorCode.INVALID_REQUEST, "orderId"),
}


@pytest.mark.parametrize(("changes", "code", "param"), CREATE_CASES.values(), ids=CREATE_CASES)
def test_a_create_payment_with_bad_text_does_not_decode(
    changes: dict[str, Any], code: ErrorCode, param: str
) -> None:
    _key, value, _record = encoded_command(**changes)
    with pytest.raises(PaygateError) as refused:
        MESSAGES.decode_any_command(value)
    assert (refused.value.code, refused.value.param) == (code, param)
    assert SUCCESS_CARD not in refused.value.message


FOLLOW_UP_CASES: dict[str, tuple[dict[str, Any], ErrorCode, str]] = {
    "order-id-nul": ({"orderId": "order\x00"}, ErrorCode.INVALID_TEXT, "orderId"),
    "order-id-tab": ({"orderId": "order\t1"}, ErrorCode.INVALID_TEXT, "orderId"),
    "order-id-too-long": ({"orderId": "o" * 65}, ErrorCode.INVALID_REQUEST, "orderId"),
    "order-id-empty": ({"orderId": ""}, ErrorCode.INVALID_REQUEST, "orderId"),
    "payment-id-nul": (
        {"paymentRequestId": "pay_" + "0" * 31 + "\x00"},
        ErrorCode.INVALID_TEXT,
        "paymentRequestId",
    ),
}
REFUND_ONLY_CASES: dict[str, tuple[dict[str, Any], ErrorCode, str]] = {
    "idempotency-key-nul": ({"idempotencyKey": "\x00"}, ErrorCode.INVALID_TEXT, "idempotencyKey"),
    "reason-nul": ({"reason": "other\x00"}, ErrorCode.INVALID_TEXT, "reason"),
    "reason-del": ({"reason": "duplicate\x7f"}, ErrorCode.INVALID_TEXT, "reason"),
    "currency-nul": (
        {"amount": Decimal("1.00"), "currency": "EU\x00"},
        ErrorCode.UNSUPPORTED_CURRENCY,
        "currency",
    ),
}


@pytest.mark.parametrize(
    ("changes", "code", "param"),
    [*FOLLOW_UP_CASES.values(), *REFUND_ONLY_CASES.values()],
    ids=[*FOLLOW_UP_CASES, *REFUND_ONLY_CASES],
)
def test_a_refund_payment_with_bad_text_does_not_decode(
    changes: dict[str, Any], code: ErrorCode, param: str
) -> None:
    with pytest.raises(PaygateError) as refused:
        MESSAGES.decode_any_command(encoded_refund(**changes))
    assert (refused.value.code, refused.value.param) == (code, param)


@pytest.mark.parametrize(
    ("changes", "code", "param"), FOLLOW_UP_CASES.values(), ids=list(FOLLOW_UP_CASES)
)
def test_a_capture_payment_with_bad_text_does_not_decode(
    changes: dict[str, Any], code: ErrorCode, param: str
) -> None:
    with pytest.raises(PaygateError) as refused:
        MESSAGES.decode_any_command(encoded_capture(**changes))
    assert (refused.value.code, refused.value.param) == (code, param)


def test_commands_with_clean_text_of_any_script_decode() -> None:
    order = "commande-é-\U0001f600"  # not an identifier for payments, but text for a refund
    refund = MESSAGES.decode_any_command(encoded_refund(orderId=order))
    capture = MESSAGES.decode_any_command(encoded_capture(orderId=order))
    _key, value, _record = encoded_command(
        metadata={"note": "Zoë's order: 2 🍰"},
        payerAccount=_account(holderName="Zoë Ñandú"),
    )
    payment = MESSAGES.decode_command(value)
    assert (refund.order_id, capture.order_id) == (order, order)
    assert payment.payer.holder_name == "Zoë Ñandú"
