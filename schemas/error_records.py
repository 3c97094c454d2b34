"""The ``ErrorDetail`` record both result events carry, to and from the domain's ErrorInfo."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain.error_info import ErrorInfo
from domain.errors import ErrorCode


def error_to_record(error: ErrorInfo | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {
        "code": error.code.value,
        "message": error.message,
        "category": error.category,
        "retryable": error.retryable,
        "param": error.param,
        "declineCode": error.decline_code,
    }


def error_from_record(record: Mapping[str, Any] | None) -> ErrorInfo | None:
    # category and retryable are not read back: the catalogue derives them from the code.
    if record is None:
        return None
    return ErrorInfo(
        code=ErrorCode(record["code"]),
        message=record["message"],
        param=record.get("param"),
        decline_code=record.get("declineCode"),
    )
