"""Refunds: ``POST /v1/payments/{id}/refunds`` and ``GET /v1/refunds/{refundId}``.

Like payments, creating a refund only publishes a command (keyed by the payment's order, so
it is processed after the payment); the consumer reserves the amount and calls the
provider. The answer is ``202 Accepted`` with the refund id, or the final refund with
``Prefer: wait=N``.

Unlike a payment, a refund must carry an ``Idempotency-Key``: a payment is also guarded by
its order (a second payment of a paid order is ``409 order_already_paid``), a refund has
nothing but its key to recognise a retry by, so a retried request without one (after a
timeout or a ``503``) would refund the payment a second time. See docs/refunds.md.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from domain.errors import ErrorCode, PaygateError
from domain.events import conflict_event_id
from domain.payments import check_idempotency_key
from domain.refund_rules import refusal_for_refund
from domain.refunds import is_refund_id, refund_id_for
from http_facade.payments_routes import (
    IDEMPOTENCY_KEY_HEADER,
    PREFER_HEADER,
    PREFERENCE_APPLIED_HEADER,
    REPLAYED_HEADER,
    client_payment,
    payment_id_in_path,
    require_json,
)
from http_facade.prefer import requested_wait
from http_facade.refund_requests import parse_refund_body
from http_facade.responses import refund_accepted_body, refund_body
from http_facade.state import (
    CLIENT_ID,
    CLOCK,
    MAX_WAIT_S,
    ORDER_ID,
    PAYMENT_REQUEST_ID,
    PUBLISHER,
    REFUNDS,
    WAITER,
)

PAYMENT_REFUNDS_PATH: Final = "/v1/payments/{paymentRequestId}/refunds"
REFUND_PATH: Final = "/v1/refunds/{refundId}"


def add_refund_routes(app: web.Application) -> None:
    app.router.add_post(PAYMENT_REFUNDS_PATH, create_refund)
    app.router.add_get(REFUND_PATH, get_refund)


async def create_refund(request: web.Request) -> web.Response:
    """``POST /v1/payments/{paymentRequestId}/refunds``: publish a RefundPayment command.

    The body may give ``amount`` and ``currency`` (both, or neither: then all that remains
    is refunded) and a ``reason``. Checks made here, before publishing, so a refused request
    changes nothing: the payment exists (404 ``not_found``), has succeeded (409
    ``payment_not_refundable``), the currency is the payment's (400 ``currency_mismatch``)
    and the amount fits what remains (409 ``refund_exceeds_captured``). The consumer makes
    the same checks again inside its transaction, which is what keeps the total of refunds
    within the captured amount when refunds cross in flight; a refund refused there ends
    ``failed`` with the same code.

    The ``Idempotency-Key`` header is required: without it, 400 ``invalid_request`` (checked
    first, so nothing else is looked at). A key already used for a refund of this payment replays it
    (same parameters: the stored refund, ``Idempotent-Replayed: true``) or is 409
    ``idempotency_conflict``, also after a wait ended by a crossing request's refund.
    """
    key = required_idempotency_key(request)
    if request.body_exists:
        # The body is optional ({} refunds what remains); a body sent must be JSON.
        require_json(request)
    wait_s = requested_wait(request.headers.getall(PREFER_HEADER, []), request.app[MAX_WAIT_S])
    payment_request_id = payment_id_in_path(request)
    body = parse_refund_body(await request.read())
    payment = await client_payment(request, payment_request_id)
    request[ORDER_ID] = payment.order_id
    command = body.to_command(
        idempotency_key=key,
        payment_request_id=payment_request_id,
        order_id=payment.order_id,
        requested_at=request.app[CLOCK](),
        # The consumer refuses a refund whose scope is not its payment's (not_found).
        client_id=request[CLIENT_ID],
    )
    refund_id = refund_id_for(payment_request_id, key)
    headers = {"Location": f"/v1/refunds/{refund_id}"}
    refunds = request.app[REFUNDS]
    fingerprint = command.parameters_fingerprint()
    stored = await refunds.get(refund_id)
    if stored is not None:
        if stored.parameters_hash != fingerprint:
            raise _key_conflict()
        headers[REPLAYED_HEADER] = "true"
        if stored.status.is_final:
            return web.json_response(refund_body(stored), status=200, headers=headers)
    else:
        refusal = refusal_for_refund(
            status=payment.status,
            payment_currency=payment.amount.currency,
            remaining_minor=payment.refundable_minor,
            requested=command.amount,
        )
        if refusal is not None:
            raise refusal
        await request.app[PUBLISHER].publish_refund(command)

    # The refusal of this request's own parameters ends its wait too; another's does not.
    own_refusal = conflict_event_id(refund_id, fingerprint)
    waiter = request.app[WAITER]
    if wait_s is not None and await waiter.wait_for_final(
        refund_id, wait_s, refusal_event_id=own_refusal
    ):
        view = await refunds.get(refund_id)
        if view is not None and view.parameters_hash != fingerprint:
            # Another request with this key and other parameters crossed this one in flight
            # (neither saw the other's refund when the key was checked): the consumer made
            # that refund and refused this one, whose wait either that refund's final result
            # or the refusal of this request's own parameters ends.
            raise _key_conflict()
        # Final as read, too: a lagging read may not show the result seen yet. (Another
        # request's refusal under this id no longer ends this wait: see ResultWaiters.)
        if view is not None and view.status.is_final:
            headers[PREFERENCE_APPLIED_HEADER] = f"wait={wait_s}"
            return web.json_response(refund_body(view), status=200, headers=headers)
    return web.json_response(
        refund_accepted_body(refund_id, payment_request_id), status=202, headers=headers
    )


def required_idempotency_key(request: web.Request) -> str:
    """The refund's ``Idempotency-Key``, checked; a request without one is refused.

    Never made up here (as a payment's is): a random key would make every retry of the
    same refund a new refund.
    """
    offered = request.headers.get(IDEMPOTENCY_KEY_HEADER)
    if offered is None:
        raise PaygateError(
            ErrorCode.INVALID_REQUEST,
            "the Idempotency-Key header is required on a refund: send a key of your own "
            "(a UUID, say) and the same key again when you retry, so a retry never refunds "
            "twice",
            param=IDEMPOTENCY_KEY_HEADER,
        )
    return check_idempotency_key(offered, param=IDEMPOTENCY_KEY_HEADER)


async def get_refund(request: web.Request) -> web.Response:
    """``GET /v1/refunds/{refundId}``: the refund as stored; 404 ``not_found`` if unknown."""
    refund_id = request.match_info["refundId"]
    if not is_refund_id(refund_id):
        raise _not_found("refund", "refundId")
    view = await request.app[REFUNDS].get(refund_id)
    if view is None:
        raise _not_found("refund", "refundId")
    try:
        # A refund is visible to the client whose payment it refunds, to no one else.
        await client_payment(request, view.payment_request_id)
    except PaygateError:
        raise _not_found("refund", "refundId") from None
    request[PAYMENT_REQUEST_ID] = view.payment_request_id
    request[ORDER_ID] = view.order_id
    return web.json_response(refund_body(view))


def _key_conflict() -> PaygateError:
    return PaygateError(
        ErrorCode.IDEMPOTENCY_CONFLICT,
        "this Idempotency-Key was already used for a refund of this payment with other parameters",
        param=IDEMPOTENCY_KEY_HEADER,
    )


def _not_found(what: str, param: str) -> PaygateError:
    return PaygateError(ErrorCode.NOT_FOUND, f"no {what} with this {param}", param=param)
