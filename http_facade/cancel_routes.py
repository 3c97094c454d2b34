"""``POST /v1/payments/{paymentRequestId}/cancel``: release the money an authorization holds.

An ``authorized`` payment (created with ``"capture": false``) is voided: this publishes a
CancelPayment command (keyed by the payment's order) and answers ``202`` with status
``canceling``. The consumer asks the provider and the payment becomes ``canceled`` (or
``expired``, if the hold had run out first; or ``authorized`` again with an error, if the
provider refused). Canceling a payment whose hold is released already answers ``200`` with
it: a cancel is idempotent per payment. Whether a cancel or a capture that cross wins is
decided by the consumer, once, in the database: the other is refused there.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from domain.cancels import CancelPayment
from domain.status import RELEASED, PaymentStatus
from http_facade.payments_routes import client_payment, payment_id_in_path, payment_json
from http_facade.responses import cancel_accepted_body
from http_facade.state import CLIENT_ID, CLOCK, ORDER_ID, PUBLISHER
from persistence.cancel_store import not_cancelable

CANCEL_PATH: Final = "/v1/payments/{paymentRequestId}/cancel"


def add_cancel_routes(app: web.Application) -> None:
    app.router.add_post(CANCEL_PATH, cancel_payment)


async def cancel_payment(request: web.Request) -> web.Response:
    """Void the authorization. No body.

    404 ``not_found`` for an unknown payment (or another client's); 409
    ``payment_not_cancelable`` unless the payment is ``authorized`` (or released already).
    """
    payment_request_id = payment_id_in_path(request)
    payment = await client_payment(request, payment_request_id)
    request[ORDER_ID] = payment.order_id
    location = {"Location": f"/v1/payments/{payment_request_id}"}
    if payment.status in RELEASED:
        return web.json_response(await payment_json(request, payment), headers=location)
    if payment.status is PaymentStatus.CANCELING:
        return web.json_response(
            cancel_accepted_body(payment_request_id), status=202, headers=location
        )
    if payment.status is not PaymentStatus.AUTHORIZED:
        raise not_cancelable(payment.status)
    await request.app[PUBLISHER].publish_cancel(
        CancelPayment.create(
            payment_request_id=payment_request_id,
            order_id=payment.order_id,
            requested_at=request.app[CLOCK](),
            # The consumer refuses a cancel whose scope is not its payment's (not_found).
            client_id=request[CLIENT_ID],
        )
    )
    return web.json_response(cancel_accepted_body(payment_request_id), status=202, headers=location)
