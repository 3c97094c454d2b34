"""``POST /v1/payments/{paymentRequestId}/capture``: take the money an authorization holds.

A payment created with ``"capture": false`` ends ``authorized``; this publishes a
CapturePayment command (keyed by the payment's order) and answers ``202`` with status
``capturing``. The consumer asks the provider and the payment becomes ``succeeded`` (or
goes back to ``authorized`` with an error, if the provider refused). An optional
``{"amount": "..."}`` captures less than the authorization; the provider releases the rest.
Capturing a payment that is captured already answers ``200`` with it when it names the same
amount (or none): a payment is captured once.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from domain.captures import CapturePayment
from domain.errors import ErrorCode, PaygateError
from domain.status import CAPTURED, PaymentStatus
from http_facade.capture_requests import parse_capture_body
from http_facade.payments_routes import (
    client_payment,
    payment_id_in_path,
    payment_json,
    require_json,
)
from http_facade.responses import capture_accepted_body
from http_facade.state import CLIENT_ID, CLOCK, ORDER_ID, PUBLISHER

CAPTURE_PATH: Final = "/v1/payments/{paymentRequestId}/capture"


def add_capture_routes(app: web.Application) -> None:
    app.router.add_post(CAPTURE_PATH, capture_payment)


async def capture_payment(request: web.Request) -> web.Response:
    """Capture all the authorized amount, or ``amount`` of it.

    404 ``not_found`` for an unknown payment (or another client's); 409
    ``payment_not_capturable`` unless the payment is ``authorized`` (or captured already);
    400 ``invalid_amount`` and 409 ``capture_exceeds_authorized`` for an amount the
    authorization cannot give; 409 ``idempotency_conflict`` for an amount other than the
    capture under way or made. Each refusal publishes nothing and changes nothing.
    """
    if request.body_exists:
        require_json(request)
    body = parse_capture_body(await request.read())
    payment_request_id = payment_id_in_path(request)
    payment = await client_payment(request, payment_request_id)
    request[ORDER_ID] = payment.order_id
    location = {"Location": f"/v1/payments/{payment_request_id}"}
    under_way_or_made = payment.status is PaymentStatus.CAPTURING or payment.status in CAPTURED
    if payment.status is not PaymentStatus.AUTHORIZED and not under_way_or_made:
        raise PaygateError(
            ErrorCode.PAYMENT_NOT_CAPTURABLE,
            f"the payment is {payment.status.value}; only an authorized payment can be captured",
        )
    amount = body.amount_of(payment.amount)
    if under_way_or_made and amount not in (None, payment.captured_amount):
        raise PaygateError(
            ErrorCode.IDEMPOTENCY_CONFLICT,
            f"the payment's capture is of {payment.captured_amount}: a payment is captured once",
            param="amount",
        )
    if payment.status in CAPTURED:
        return web.json_response(await payment_json(request, payment), headers=location)
    if payment.status is PaymentStatus.CAPTURING:
        return web.json_response(
            capture_accepted_body(payment_request_id), status=202, headers=location
        )
    await request.app[PUBLISHER].publish_capture(
        CapturePayment.create(
            payment_request_id=payment_request_id,
            order_id=payment.order_id,
            requested_at=request.app[CLOCK](),
            # The consumer refuses a capture whose scope is not its payment's (not_found).
            client_id=request[CLIENT_ID],
            amount=None if amount is None else amount.to_decimal(),
        )
    )
    return web.json_response(
        capture_accepted_body(payment_request_id), status=202, headers=location
    )
