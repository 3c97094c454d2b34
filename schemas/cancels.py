"""Translation between the CancelPayment Avro record and the domain's command."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain.cancels import CancelPayment
from schemas.fields import requested_at_of


def cancel_payment_from_record(record: Mapping[str, Any]) -> CancelPayment:
    return CancelPayment.create(
        payment_request_id=record["paymentRequestId"],
        order_id=record["orderId"],
        requested_at=requested_at_of(record),
        client_id=record.get("clientId"),
    )


def cancel_payment_to_record(command: CancelPayment) -> dict[str, Any]:
    return {
        "paymentRequestId": command.payment_request_id,
        "orderId": command.order_id,
        "requestedAt": command.requested_at,
        "clientId": command.client_id,
    }
