"""An error's text is made storable wherever an error is made: a provider's decline code
(and an error's param) cut to the store's column width, U+0000 and unpaired surrogates
replaced, so what the store, the result event and REST say is one value every database
and the codec accept (tests/integration/test_provider_error_text.py)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Column, String

from domain.error_info import ErrorInfo
from domain.errors import (
    MAX_DECLINE_CODE_LENGTH,
    MAX_PARAM_LENGTH,
    ErrorCode,
    PaygateError,
    storable_text,
)
from persistence.tables import payments, refunds

pytestmark = pytest.mark.unit

LONG = "x" * 300


def test_a_paygate_error_cuts_a_long_decline_code_and_param() -> None:
    error = PaygateError(ErrorCode.PAYMENT_DECLINED, "declined", param=LONG, decline_code=LONG)
    assert error.decline_code == LONG[:MAX_DECLINE_CODE_LENGTH]
    assert error.param == LONG[:MAX_PARAM_LENGTH]
    assert ErrorInfo.from_error(error).decline_code == LONG[:MAX_DECLINE_CODE_LENGTH]


def test_error_info_made_directly_is_cut_too() -> None:
    info = ErrorInfo(ErrorCode.REFUND_FAILED, "failed", param=LONG, decline_code=LONG)
    assert info.decline_code == LONG[:MAX_DECLINE_CODE_LENGTH]
    assert info.param == LONG[:MAX_PARAM_LENGTH]


def test_short_values_and_none_are_kept() -> None:
    error = PaygateError(ErrorCode.PAYMENT_DECLINED, "declined", decline_code="generic_decline")
    assert (error.decline_code, error.param) == ("generic_decline", None)
    info = ErrorInfo(ErrorCode.PAYMENT_DECLINED, "declined", param="amount")
    assert (info.param, info.decline_code) == ("amount", None)


def _width(column: Column[Any]) -> int | None:
    assert isinstance(column.type, String)
    return column.type.length


def test_the_bounds_are_the_columns_widths() -> None:
    assert _width(payments.c.decline_code) == MAX_DECLINE_CODE_LENGTH
    assert _width(refunds.c.decline_code) == MAX_DECLINE_CODE_LENGTH
    assert _width(payments.c.error_param) == MAX_PARAM_LENGTH


@pytest.mark.parametrize(
    ("text", "storable"),
    [
        ("declined", "declined"),
        ("refusé: carte expirée", "refusé: carte expirée"),
        ("a \U0001f600 whole emoji", "a \U0001f600 whole emoji"),
        ("half \ud83d of one", "half \ufffd of one"),
        ("nul\x00here", "nul\ufffdhere"),
    ],
)
def test_storable_text_replaces_only_what_no_store_can_carry(text: str, storable: str) -> None:
    assert storable_text(text) == storable
    error = PaygateError(ErrorCode.PAYMENT_DECLINED, text, decline_code=text)
    assert (error.message, str(error), error.decline_code) == (storable, storable, storable)
    info = ErrorInfo(ErrorCode.PAYMENT_DECLINED, text, decline_code=text)
    assert (info.message, info.decline_code) == (storable, storable)
