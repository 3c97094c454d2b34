"""The body of ``POST /v1/payments/{id}/capture``: optional; its shape checked here, its
value (exact, in the payment's currency, at most what is authorized) by the domain."""

from __future__ import annotations

from pydantic import ValidationError

from domain.captures import capture_amount
from domain.errors import ErrorCode, PaygateError
from domain.money import Money, money_from_text
from http_facade.requests import StrictBody, decode_json, raise_first


class CaptureBody(StrictBody):
    """``{}`` (or no body) captures all the authorization holds."""

    amount: str | None = None

    def amount_of(self, authorized: Money) -> Money | None:
        """The amount asked for, checked against the authorization (None: all of it).

        Raises PaygateError: ``invalid_amount`` (not a decimal string, more decimals than
        the currency has), ``capture_exceeds_authorized``."""
        if self.amount is None:
            return None
        asked = money_from_text(self.amount, authorized.currency)
        return capture_amount(authorized, asked.to_decimal())


def parse_capture_body(raw: bytes) -> CaptureBody:
    """Decode and shape-check a capture body (empty means ``{}``), or raise PaygateError."""
    document = decode_json(raw) if raw.strip() else {}
    if not isinstance(document, dict):
        raise PaygateError(ErrorCode.INVALID_REQUEST, "request body must be a JSON object")
    try:
        return CaptureBody.model_validate(document)
    except ValidationError as exc:
        raise_first(exc)
