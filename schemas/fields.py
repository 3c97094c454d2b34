"""Fields several command records share, read the same way for each."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from domain.errors import ErrorCode, PaygateError


def requested_at_of(record: Mapping[str, Any]) -> datetime:
    requested_at = record["requestedAt"]
    if not isinstance(requested_at, datetime):
        raise PaygateError(ErrorCode.INVALID_REQUEST, "requestedAt is not a timestamp")
    return requested_at
