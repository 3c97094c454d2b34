"""``/v1/payments``: create a payment, read a payment.

Creating only publishes a command; the consumer does the work. So the create answer is
normally ``202 Accepted`` with the payment id, and the outcome is read later with GET,
or awaited within the request with ``Prefer: wait=N``.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from typing import Final

from aiohttp import web

from domain.errors import ErrorCode, PaygateError
from domain.events import conflict_event_id
from domain.idempotency import resolve_key
from domain.order_protection import refusal_for_new_payment
from domain.payment_view import PaymentView
from domain.payments import check_idempotency_key, is_payment_request_id
from http_facade.account_vaulting import with_numbers_vaulted, with_tokens_resolved
from http_facade.list_query import parse_list_query
from http_facade.prefer import requested_wait
from http_facade.requests import parse_create_payment_body
from http_facade.responses import accepted_body, payment_body
from http_facade.state import (
    ACCOUNT_KEY,
    CLIENT_ID,
    CLOCK,
    MAX_WAIT_S,
    ORDER_ID,
    PAYMENT_REQUEST_ID,
    PUBLISHER,
    QUERIES,
    REFUNDS,
    WAITER,
)

PAYMENTS_PATH: Final = "/v1/payments"
PAYMENT_PATH: Final = "/v1/payments/{paymentRequestId}"
IDEMPOTENCY_KEY_HEADER: Final = "Idempotency-Key"
PREFER_HEADER: Final = "Prefer"
PREFERENCE_APPLIED_HEADER: Final = "Preference-Applied"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
_JSON: Final = "application/json"


def add_payment_routes(app: web.Application) -> None:
    app.router.add_post(PAYMENTS_PATH, create_payment)
    app.router.add_get(PAYMENTS_PATH, list_payments)
    app.router.add_get(PAYMENT_PATH, get_payment)


async def create_payment(request: web.Request) -> web.Response:
    """``POST /v1/payments``: publish a CreatePayment command.

    Without ``Idempotency-Key`` a random key is used, so every such call is a new payment;
    a client that may retry must send one. With ``Prefer: wait=N`` the answer waits up to N
    seconds (capped) for the final result: 200 with the payment if it came, else the same
    202 as without the header. Every check happens before publishing, so a refused request
    changes nothing.

    A key already used for this order replays: with the same parameters the stored payment
    is answered (``Idempotent-Replayed: true``) and nothing is published again; with other
    parameters the answer is 409 ``idempotency_conflict``. A new payment for an order that
    is paid (or whose payment is unresolved) is 409 ``order_already_paid``; one for an
    order whose payments failed needs ``newAttempt: true``. The consumer enforces the same
    rules again, inside its database transaction, for requests that cross in flight; a
    waiting request whose key another request used first with other parameters is answered
    409 ``idempotency_conflict`` after its wait, not with that request's payment.
    """
    require_json(request)
    idempotency_key = read_idempotency_key(request)
    wait_s = requested_wait(request.headers.getall(PREFER_HEADER, []), request.app[MAX_WAIT_S])
    body = parse_create_payment_body(await request.read())
    command = body.to_command(
        idempotency_key=idempotency_key,
        requested_at=request.app[CLOCK](),
        client_id=request[CLIENT_ID],
    )
    request[ORDER_ID] = command.order_id
    command = await with_tokens_resolved(request, command)
    queries = request.app[QUERIES]

    order = await queries.order_payments(command.order_id, command.client_id)
    key = resolve_key(order, idempotency_key)
    fingerprint = command.parameters_fingerprint(request.app[ACCOUNT_KEY])
    headers: dict[str, str] = {}
    if key.live_payment_id is not None:
        payment_request_id = key.live_payment_id
        request[PAYMENT_REQUEST_ID] = payment_request_id
        headers["Location"] = f"{PAYMENTS_PATH}/{payment_request_id}"
        stored = await queries.get_payment(payment_request_id)
        if stored is not None and stored.parameters_hash != fingerprint:
            raise _key_conflict()
        headers[REPLAYED_HEADER] = "true"
        if stored is not None and stored.status.ends_a_wait:
            return web.json_response(await payment_json(request, stored), headers=headers)
    else:
        # A key never used for this order, or used and expired: a new payment, whose id the
        # consumer derives the same way from the same order.
        command = dataclasses.replace(command, generation=key.next_generation)
        payment_request_id = command.payment_request_id
        request[PAYMENT_REQUEST_ID] = payment_request_id
        headers["Location"] = f"{PAYMENTS_PATH}/{payment_request_id}"
        refusal = refusal_for_new_payment(
            (p.status for p in order), new_attempt=command.new_attempt
        )
        if refusal is not None:
            raise refusal
        # Last, so a refused or replayed request vaults nothing.
        command = await with_numbers_vaulted(request, command)
        publisher = request.app[PUBLISHER]
        if wait_s is None:
            await publisher.publish_create_payment(command)
            return _accepted(payment_request_id, headers)
        # Watched before publishing: its result cannot come first, so the store is not read
        # before waiting.
        own_refusal = conflict_event_id(payment_request_id, fingerprint)
        with request.app[WAITER].watch(payment_request_id, refusal_event_id=own_refusal) as watch:
            await publisher.publish_create_payment(command)
            final = await watch.final(wait_s)
        return await _answer_after_wait(
            request, payment_request_id, fingerprint, final, wait_s, headers
        )

    final = wait_s is not None and await request.app[WAITER].wait_for_final(
        payment_request_id,
        wait_s,
        refusal_event_id=conflict_event_id(payment_request_id, fingerprint),
    )
    return await _answer_after_wait(
        request, payment_request_id, fingerprint, final, wait_s, headers
    )


async def _answer_after_wait(
    request: web.Request,
    payment_request_id: str,
    fingerprint: str,
    final: bool,
    wait_s: int | None,
    headers: dict[str, str],
) -> web.Response:
    """200 with the payment if its final result came within the wait, else 202; 409
    ``idempotency_conflict`` if the payment found is not of this request's parameters."""
    if final:
        # The result event can be seen a moment before the store is readable (another
        # replica, a lagging read); then the client gets the 202 and polls like anyone.
        found = await request.app[QUERIES].payment_with_refunds(payment_request_id)
        if found is not None and found[0].parameters_hash != fingerprint:
            # Another request with this key and other parameters crossed this one in flight
            # (neither saw the other's payment when the key was checked): the consumer
            # charged that one and refused this one, whose wait either that payment's final
            # result or the refusal of this request's own parameters ends.
            raise _key_conflict()
        # Final as read, too: a lagging read may not show the result seen yet. (Another
        # request's refusal under this id no longer ends this wait: see ResultWaiters.)
        if found is not None and found[0].status.ends_a_wait:
            headers[PREFERENCE_APPLIED_HEADER] = f"wait={wait_s}"
            return web.json_response(payment_body(*found), headers=headers)
    return _accepted(payment_request_id, headers)


def _accepted(payment_request_id: str, headers: dict[str, str]) -> web.Response:
    return web.json_response(accepted_body(payment_request_id), status=202, headers=headers)


async def get_payment(request: web.Request) -> web.Response:
    """``GET /v1/payments/{paymentRequestId}``: the payment as stored, accounts masked.

    404 ``not_found`` for an id that does not exist or is not even shaped like one. A
    payment just created can also be 404 for a short while: the command is still in Kafka
    and the consumer has not written the row yet. Clients that got a 202 with the id should
    poll until it appears, or create with ``Prefer: wait=N`` instead.
    """
    payment_request_id = payment_id_in_path(request)
    found = await request.app[QUERIES].payment_with_refunds(payment_request_id)
    # Another client's payment is not_found, as in client_payment.
    if found is None or found[0].client_id != request[CLIENT_ID]:
        raise _payment_not_found()
    request[ORDER_ID] = found[0].order_id
    return web.json_response(payment_body(*found))


def payment_id_in_path(request: web.Request) -> str:
    """The ``{paymentRequestId}`` of the path, for the access log too; 404 unless it is
    shaped like a payment id.

    Checked before use so that whatever a client put in the path (perhaps an account
    number pasted in error) is neither queried for nor logged.
    """
    payment_request_id = request.match_info["paymentRequestId"]
    if not is_payment_request_id(payment_request_id):
        raise _payment_not_found()
    request[PAYMENT_REQUEST_ID] = payment_request_id
    return payment_request_id


async def client_payment(request: web.Request, payment_request_id: str) -> PaymentView:
    """The payment, if it exists and the request's client created it; else 404.

    Another client's payment is ``not_found``, exactly like a missing one (not 403), so
    ids cannot be probed for existence.
    """
    view = await request.app[QUERIES].get_payment(payment_request_id)
    if view is None or view.client_id != request[CLIENT_ID]:
        raise _payment_not_found()
    return view


async def list_payments(request: web.Request) -> web.Response:
    """``GET /v1/payments?orderId=...``: the client's payments of an order, oldest first.

    Paginated: ``limit`` (1 to 100, default 20) per page; the answer's
    ``nextStartingAfter``, passed as ``startingAfter``, fetches the next page.
    """
    query = parse_list_query(request.query)
    request[ORDER_ID] = query.order_id
    # One more than asked tells whether another page follows.
    page = await request.app[QUERIES].client_order_page(
        request[CLIENT_ID],
        query.order_id,
        limit=query.limit + 1,
        starting_after=query.starting_after,
    )
    has_more = len(page) > query.limit
    page = page[: query.limit]
    return web.json_response(
        {
            "data": await payments_json(request, page),
            "hasMore": has_more,
            "nextStartingAfter": page[-1].payment_request_id if has_more else None,
        }
    )


def require_json(request: web.Request) -> None:
    # JSON is UTF-8 by definition (RFC 8259); another declared charset is not JSON we read.
    charset = request.charset
    if request.content_type != _JSON or (charset is not None and charset.lower() != "utf-8"):
        raise PaygateError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            "request body must be sent as Content-Type: application/json",
            param="Content-Type",
        )


def read_idempotency_key(request: web.Request) -> str:
    offered = request.headers.get(IDEMPOTENCY_KEY_HEADER)
    if offered is None:
        return uuid.uuid4().hex
    return check_idempotency_key(offered, param=IDEMPOTENCY_KEY_HEADER)


async def payment_json(request: web.Request, view: PaymentView) -> dict[str, object]:
    """The payment's body, with its refunds."""
    return (await payments_json(request, [view]))[0]


async def payments_json(
    request: web.Request, views: Sequence[PaymentView]
) -> list[dict[str, object]]:
    """The payments' bodies, with their refunds, read in one query."""
    refunds = await request.app[REFUNDS].of_payments([v.payment_request_id for v in views])
    return [payment_body(view, refunds[view.payment_request_id]) for view in views]


def _key_conflict() -> PaygateError:
    return PaygateError(
        ErrorCode.IDEMPOTENCY_CONFLICT,
        "this Idempotency-Key was already used for this order with other parameters",
        param=IDEMPOTENCY_KEY_HEADER,
    )


def _payment_not_found() -> PaygateError:
    return PaygateError(ErrorCode.NOT_FOUND, "no payment with this paymentRequestId")
