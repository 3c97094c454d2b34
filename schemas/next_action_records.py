"""The ``nextAction`` record of payment_result.v2: a requires_action payment's next action."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain.next_action import NextAction, NextActionType


def next_action_to_record(action: NextAction | None) -> dict[str, Any] | None:
    if action is None:
        return None
    return {
        "type": action.type.value,
        "url": action.url,
        "qrCode": action.qr_code,
        "expiresAt": action.expires_at,
    }


def next_action_from_record(record: Mapping[str, Any] | None) -> NextAction | None:
    """Raises ValueError for a record whose target does not match its type."""
    if record is None:
        return None
    return NextAction(
        type=NextActionType(record["type"]),
        expires_at=record["expiresAt"],
        url=record.get("url"),
        qr_code=record.get("qrCode"),
    )
