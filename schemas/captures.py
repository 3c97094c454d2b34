"""Translation between the CapturePayment Avro record and the domain's command."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain.captures import CapturePayment
from schemas.fields import requested_at_of


def capture_payment_from_record(record: Mapping[str, Any]) -> CapturePayment:
    return CapturePayment.create(
        payment_request_id=record["paymentRequestId"],
        order_id=record["orderId"],
        requested_at=requested_at_of(record),
        # Absent from v1 records: the resolver fills the default, null (upstream scope).
        client_id=record.get("clientId"),
        amount=record.get("amount"),
    )


def capture_payment_to_record(command: CapturePayment) -> dict[str, Any]:
    return {
        "paymentRequestId": command.payment_request_id,
        "orderId": command.order_id,
        "requestedAt": command.requested_at,
        "clientId": command.client_id,
        "amount": command.amount,
    }
