"""Webhook endpoints of the calling API client, and their deliveries.

    POST   /v1/webhook_endpoints                                         register one
    GET    /v1/webhook_endpoints                                         list them
    GET    /v1/webhook_endpoints/{endpointId}                            one
    DELETE /v1/webhook_endpoints/{endpointId}                            stop it
    GET    /v1/webhook_endpoints/{endpointId}/deliveries                 its deliveries
    POST   /v1/webhook_endpoints/{endpointId}/deliveries/{deliveryId}/retry   send again

A client sees only its own endpoints: another client's ids are ``404 not_found``. The
signing secret is in the answer to POST only. The URL is checked against server-side
request forgery (:mod:`http_facade.webhook_url_check`); the event types against the ones
there are (:func:`domain.webhook_events.event_types`, or ``*``). See docs/webhooks.md.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from aiohttp import web
from pydantic import Field, ValidationError

from domain.account_numbers import check_no_account_number
from domain.errors import ErrorCode, PaygateError
from domain.text import check_characters
from domain.webhook_events import ALL_EVENTS, event_types
from domain.webhook_views import DeliveryInfo, EndpointInfo
from http_facade.payments_routes import require_json
from http_facade.requests import StrictBody, decode_json, raise_first
from http_facade.state import CLIENT_ID, WEBHOOK_URL_CHECK, WEBHOOKS

ENDPOINTS_PATH: Final = "/v1/webhook_endpoints"
ENDPOINT_PATH: Final = "/v1/webhook_endpoints/{endpointId}"
DELIVERIES_PATH: Final = "/v1/webhook_endpoints/{endpointId}/deliveries"
RETRY_PATH: Final = "/v1/webhook_endpoints/{endpointId}/deliveries/{deliveryId}/retry"
_MAX_DELIVERIES: Final = 100
_STATUSES: Final = frozenset({"pending", "delivered", "failed"})


class EndpointBody(StrictBody):
    url: str = Field(max_length=2048)
    enabled_events: list[str] = Field(alias="enabledEvents", min_length=1, max_length=64)
    description: str | None = Field(None, max_length=255)


def add_webhook_routes(app: web.Application) -> None:
    app.router.add_post(ENDPOINTS_PATH, create_endpoint)
    app.router.add_get(ENDPOINTS_PATH, list_endpoints)
    app.router.add_get(ENDPOINT_PATH, get_endpoint)
    app.router.add_delete(ENDPOINT_PATH, delete_endpoint)
    app.router.add_get(DELIVERIES_PATH, list_deliveries)
    app.router.add_post(RETRY_PATH, retry_delivery)


async def create_endpoint(request: web.Request) -> web.Response:
    """201 with the endpoint and its ``secret`` (shown this once). 400 ``invalid_request``
    for an unknown event type; 400 ``webhook_url_refused`` for a URL paygate may not send
    to. Nothing is stored when either is refused."""
    require_json(request)
    body = _parse_body(await request.read())
    # The one text rule (domain.text): what PostgreSQL or UTF-8 cannot carry never reaches
    # the resolver or the store.
    check_characters(body.url, "url")
    check_characters(body.description, "description")
    # Both are stored in clear and shown on every read of the endpoint.
    check_no_account_number(body.url, param="url", name="url")
    if body.description is not None:
        check_no_account_number(body.description, param="description", name="description")
    known = event_types() | {ALL_EVENTS}
    for index, event in enumerate(body.enabled_events):
        if event not in known:
            # Named by its place only: the message never echoes what the client typed.
            raise PaygateError(
                ErrorCode.INVALID_REQUEST,
                f"enabledEvents[{index}] is not a known event type; see GET /openapi.json "
                "or docs/webhooks.md",
                param="enabledEvents",
            )
    url = await request.app[WEBHOOK_URL_CHECK].check(body.url)
    created = await request.app[WEBHOOKS].create_endpoint(
        request[CLIENT_ID], url, body.enabled_events, body.description
    )
    answer = {**endpoint_body(created.endpoint), "secret": created.secret}
    location = {"Location": f"{ENDPOINTS_PATH}/{created.endpoint.id}"}
    return web.json_response(answer, status=201, headers=location)


async def list_endpoints(request: web.Request) -> web.Response:
    endpoints = await request.app[WEBHOOKS].endpoints(request[CLIENT_ID])
    return web.json_response({"data": [endpoint_body(e) for e in endpoints]})


async def get_endpoint(request: web.Request) -> web.Response:
    return web.json_response(endpoint_body(await _client_endpoint(request)))


async def delete_endpoint(request: web.Request) -> web.Response:
    """200 with the endpoint as it was; its pending deliveries fail with ``lastError``
    saying why."""
    endpoint = await _client_endpoint(request)
    if not await request.app[WEBHOOKS].delete_endpoint(request[CLIENT_ID], endpoint.id):
        raise _not_found()  # deleted meanwhile by another request
    return web.json_response(endpoint_body(endpoint))


async def list_deliveries(request: web.Request) -> web.Response:
    """Newest first; ``?status=pending|delivered|failed`` and ``?limit=`` (1-100, 50)."""
    endpoint = await _client_endpoint(request)
    status = request.query.get("status")
    if status is not None and status not in _STATUSES:
        raise PaygateError(
            ErrorCode.INVALID_REQUEST,
            "status must be one of pending, delivered, failed",
            param="status",
        )
    limit = _limit(request.query.get("limit"))
    deliveries = await request.app[WEBHOOKS].deliveries(
        client_id=request[CLIENT_ID], endpoint_id=endpoint.id, status=status, limit=limit
    )
    return web.json_response({"data": [delivery_body(d) for d in deliveries]})


async def retry_delivery(request: web.Request) -> web.Response:
    """202 with the delivery, pending again and due now (a delivered one is re-sent with
    the same ``webhook-id``)."""
    endpoint = await _client_endpoint(request)
    retried = await request.app[WEBHOOKS].retry(
        request.match_info["deliveryId"], client_id=request[CLIENT_ID], endpoint_id=endpoint.id
    )
    if retried is None:
        raise _not_found()
    return web.json_response(delivery_body(retried), status=202)


def endpoint_body(endpoint: EndpointInfo) -> dict[str, object]:
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "enabledEvents": endpoint.enabled_events,
        "createdAt": _utc_text(endpoint.created_at),
    }


def delivery_body(delivery: DeliveryInfo) -> dict[str, object]:
    return {
        "id": delivery.id,
        "endpointId": delivery.endpoint_id,
        "eventId": delivery.event_id,
        "eventType": delivery.event_type,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "nextAttemptAt": _utc_or_none(delivery.next_attempt_at),
        "lastAttemptAt": _utc_or_none(delivery.last_attempt_at),
        "lastResponseCode": delivery.last_status_code,
        "lastError": delivery.last_error,
        "createdAt": _utc_text(delivery.created_at),
        "updatedAt": _utc_text(delivery.updated_at),
    }


async def _client_endpoint(request: web.Request) -> EndpointInfo:
    endpoint = await request.app[WEBHOOKS].endpoint(
        request[CLIENT_ID], request.match_info["endpointId"]
    )
    if endpoint is None:
        raise _not_found()
    return endpoint


def _parse_body(raw: bytes) -> EndpointBody:
    document = decode_json(raw)
    if not isinstance(document, dict):
        raise PaygateError(ErrorCode.INVALID_REQUEST, "request body must be a JSON object")
    try:
        return EndpointBody.model_validate(document)
    except ValidationError as exc:
        raise_first(exc)


def _limit(text: str | None) -> int:
    if text is None:
        return 50
    if not text.isdigit() or not 1 <= int(text) <= _MAX_DELIVERIES:
        raise PaygateError(
            ErrorCode.INVALID_REQUEST,
            f"limit must be a whole number from 1 to {_MAX_DELIVERIES}",
            param="limit",
        )
    return int(text)


def _not_found() -> PaygateError:
    return PaygateError(ErrorCode.NOT_FOUND, "no such webhook endpoint or delivery")


def _utc_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else _utc_text(moment)


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
