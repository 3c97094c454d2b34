"""The body of ``POST /v1/payments/{id}/refunds``: shape checked here, values by the domain."""

from __future__ import annotations

from datetime import datetime

from pydantic import ValidationError

from domain.errors import ErrorCode, PaygateError
from domain.money import money_from_text
from domain.refunds import RefundPayment
from http_facade.requests import StrictBody, decode_json, raise_first


class RefundBody(StrictBody):
    """All optional: ``{}`` refunds what remains of the payment."""

    amount: str | None = None
    currency: str | None = None
    reason: str | None = None

    def to_command(
        self,
        *,
        idempotency_key: str,
        payment_request_id: str,
        order_id: str,
        requested_at: datetime,
        client_id: str,
    ) -> RefundPayment:
        amount = None
        if self.amount is not None:
            if self.currency is None:
                raise PaygateError(
                    ErrorCode.INVALID_REQUEST, "currency is required with amount", param="currency"
                )
            amount = money_from_text(self.amount, self.currency)
        elif self.currency is not None:
            raise PaygateError(
                ErrorCode.INVALID_REQUEST,
                "currency is only meaningful with amount; leave both out to refund all that "
                "remains",
                param="currency",
            )
        return RefundPayment.create(
            idempotency_key=idempotency_key,
            payment_request_id=payment_request_id,
            order_id=order_id,
            amount=amount,
            reason=self.reason,
            requested_at=requested_at,
            client_id=client_id,
        )


def parse_refund_body(raw: bytes) -> RefundBody:
    """Decode and shape-check a refund body (empty means ``{}``), or raise PaygateError."""
    document = decode_json(raw) if raw.strip() else {}
    if not isinstance(document, dict):
        raise PaygateError(ErrorCode.INVALID_REQUEST, "request body must be a JSON object")
    try:
        return RefundBody.model_validate(document)
    except ValidationError as exc:
        raise_first(exc)
