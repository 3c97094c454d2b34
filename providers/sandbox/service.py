"""The sandbox acquirer as an HTTP service, for integration tests, the dev stack and chaos.

Endpoints::

    POST /v1/charges            Idempotency-Key header, JSON body -> 200 charge | 400 | 409 |
                                503 (with Retry-After when the test number asks for one)
    GET  /v1/charges/{key}      -> 200 charge | 404
    GET  /v1/charges/by-id/{chargeId}          -> 200 charge | 404
    POST /v1/charges/{chargeId}/capture        Idempotency-Key header -> 200 charge | 400 |
                                               409 | 422
    POST /v1/charges/{key}/close               -> 200 charge | 404: a charge still waiting
                                               for its payer becomes expired
    GET  /v1/actions/{chargeId} -> 200 the action as the payer's page would show it | 404
    POST /v1/actions/{chargeId}/complete       {"result": "approve" | "deny"} -> 200 charge |
                                               404 | 422: the payer's side of the action
    POST /v1/charges/{chargeId}/cancel         Idempotency-Key header, body {} -> 200 charge
                                               (canceled, or expired) | 400 | 422
    POST /v1/refunds            Idempotency-Key header -> 200 refund | 400 | 409 | 422
    GET  /v1/refunds/{key}      -> 200 refund | 404
    GET  /admin/charges         -> {"charges": [...]}, payer numbers masked
    GET  /admin/refunds         -> {"refunds": [...]}
    GET  /admin/stats           -> counts for chaos assertions
    GET  /admin/in-flight       -> {"charges": [...]}: charge calls not answered yet
    GET  /healthz               -> {"status": "ok"}

With an :class:`~providers.sandbox.alipay.AlipaySimulator`, also Alipay's ``/gateway.do``
and ``/alipay/admin/...`` (see providers.sandbox.alipay.gateway).

The acquirer decides; this module only parses, calls and renders. The ledger is opened
and closed with the app (``cleanup_ctx``), never at import time.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from domain.errors import ErrorCode, PaygateError
from domain.payments import check_idempotency_key
from providers.sandbox.acquirer import SandboxAcquirer
from providers.sandbox.alipay import AlipaySimulator, add_alipay_routes
from providers.sandbox.errors import (
    SandboxIdempotencyConflictError,
    SandboxRefusedError,
    SandboxUnavailableError,
)
from providers.sandbox.refund_wire import (
    admin_refund_json,
    parse_capture_body,
    parse_refund_body,
    refund_json,
)
from providers.sandbox.wire import admin_charge_json, charge_json, error_json, parse_charge_body

ACQUIRER: web.AppKey[SandboxAcquirer] = web.AppKey("sandbox_acquirer", SandboxAcquirer)

IDEMPOTENCY_HEADER = "Idempotency-Key"
RETRY_AFTER_HEADER = "Retry-After"


def _error(
    status: int, code: ErrorCode | str, message: str, param: str | None = None
) -> web.Response:
    return web.json_response(error_json(code, message, param), status=status)


def _bad_request(error: PaygateError) -> web.Response:
    return _error(400, error.code, error.message, error.param)


def _refused(error: SandboxRefusedError) -> web.Response:
    return _error(422, error.code, error.message, error.param)


def _conflict(error: SandboxIdempotencyConflictError) -> web.Response:
    return _error(409, ErrorCode.IDEMPOTENCY_CONFLICT, str(error), IDEMPOTENCY_HEADER)


class _BadRequest(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


async def _key_and_body(request: web.Request) -> tuple[str, object]:
    """The Idempotency-Key header and the JSON body, or _BadRequest carrying the 400."""
    try:
        key = check_idempotency_key(request.headers.get(IDEMPOTENCY_HEADER), IDEMPOTENCY_HEADER)
    except PaygateError as exc:
        raise _BadRequest(_bad_request(exc)) from None
    try:
        return key, json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise _BadRequest(
            _error(400, ErrorCode.INVALID_REQUEST, "the body is not valid JSON", "body")
        ) from None


@web.middleware
async def _answer_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every handler's errors answered in one place, as the acquirer's API says."""
    try:
        return await handler(request)
    except _BadRequest as exc:
        return exc.response
    except PaygateError as exc:  # a body or header the request parsers refused
        return _bad_request(exc)
    except SandboxUnavailableError as exc:
        unavailable = _error(503, ErrorCode.PROVIDER_UNAVAILABLE, str(exc))
        if exc.retry_after is not None:
            unavailable.headers[RETRY_AFTER_HEADER] = exc.retry_after
        return unavailable
    except SandboxRefusedError as exc:
        return _refused(exc)
    except SandboxIdempotencyConflictError as exc:
        return _conflict(exc)


async def _create_charge(request: web.Request) -> web.Response:
    key, body = await _key_and_body(request)
    record = await request.app[ACQUIRER].charge(key, parse_charge_body(body))
    return web.json_response(charge_json(record, _own_url(request)))


async def _get_charge_by_id(request: web.Request) -> web.Response:
    acquirer = request.app[ACQUIRER]
    record = await acquirer.charge_by_id(request.match_info["charge_id"])
    if record is None:
        return _error(404, ErrorCode.NOT_FOUND, "no charge with this id")
    refunded = await acquirer.refunded_of(record.charge_id)
    return web.json_response(charge_json(record, _own_url(request), refunded_minor=refunded))


async def _capture_charge(request: web.Request) -> web.Response:
    key, body = await _key_and_body(request)
    params = parse_capture_body(request.match_info["charge_id"], body)
    record = await request.app[ACQUIRER].capture(key, params)
    return web.json_response(charge_json(record, _own_url(request)))


def _own_url(request: web.Request) -> str:
    """The service's base URL as the caller reached it: action URLs point back here."""
    return f"{request.scheme}://{request.host}"


async def _close_charge(request: web.Request) -> web.Response:
    record = await request.app[ACQUIRER].close(request.match_info["key"])
    if record is None:
        return _error(404, ErrorCode.NOT_FOUND, "no charge with this idempotency key")
    return web.json_response(charge_json(record, _own_url(request)))


async def _show_action(request: web.Request) -> web.Response:
    record = await request.app[ACQUIRER].charge_by_id(request.match_info["charge_id"])
    if record is None or record.action_expires_at is None:
        return _error(404, ErrorCode.NOT_FOUND, "no payer action with this charge id")
    return web.json_response(
        {
            "chargeId": record.charge_id,
            "status": record.status.value,
            "amountMinor": record.amount_minor,
            "currency": record.currency,
            "expiresAt": record.action_expires_at.isoformat(),
        }
    )


async def _complete_action(request: web.Request) -> web.Response:
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return _error(400, ErrorCode.INVALID_REQUEST, "the body is not valid JSON", "body")
    result = body.get("result") if isinstance(body, dict) else None
    if result not in ("approve", "deny"):
        return _error(400, ErrorCode.INVALID_REQUEST, "result must be approve or deny", "result")
    record = await request.app[ACQUIRER].complete_action(
        request.match_info["charge_id"], approve=result == "approve"
    )
    return web.json_response(charge_json(record, _own_url(request)))


async def _cancel_charge(request: web.Request) -> web.Response:
    _key, body = await _key_and_body(request)
    if body != {}:
        raise PaygateError(ErrorCode.INVALID_REQUEST, "the body must be {}", param="body")
    record = await request.app[ACQUIRER].cancel(request.match_info["charge_id"])
    return web.json_response(charge_json(record))


async def _create_refund(request: web.Request) -> web.Response:
    key, body = await _key_and_body(request)
    record = await request.app[ACQUIRER].refund(key, parse_refund_body(body))
    return web.json_response(refund_json(record))


async def _get_refund(request: web.Request) -> web.Response:
    record = await request.app[ACQUIRER].refund_status(request.match_info["key"])
    if record is None:
        return _error(404, ErrorCode.NOT_FOUND, "no refund with this idempotency key")
    return web.json_response(refund_json(record))


async def _list_refunds(request: web.Request) -> web.Response:
    records = await request.app[ACQUIRER].refunds()
    return web.json_response({"refunds": [admin_refund_json(record) for record in records]})


async def _get_charge(request: web.Request) -> web.Response:
    record = await request.app[ACQUIRER].status(request.match_info["key"])
    if record is None:
        return _error(404, ErrorCode.NOT_FOUND, "no charge with this idempotency key")
    return web.json_response(charge_json(record, _own_url(request)))


async def _list_charges(request: web.Request) -> web.Response:
    records = await request.app[ACQUIRER].charges()
    return web.json_response({"charges": [admin_charge_json(record) for record in records]})


async def _stats(request: web.Request) -> web.Response:
    stats = await request.app[ACQUIRER].stats()
    return web.json_response(stats.to_json())


async def _in_flight(request: web.Request) -> web.Response:
    calls = request.app[ACQUIRER].in_flight()
    return web.json_response(
        {"charges": [{"idempotencyKey": key, "paymentReference": ref} for key, ref in calls]}
    )


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_sandbox_app(
    acquirer: SandboxAcquirer, alipay: AlipaySimulator | None = None
) -> web.Application:
    """The acquirer's API, plus Alipay's ``gateway.do`` when ``alipay`` is given."""
    app = web.Application(middlewares=[_answer_errors])
    app[ACQUIRER] = acquirer
    if alipay is not None:
        add_alipay_routes(app, alipay)

    async def ledger_lifecycle(app: web.Application) -> AsyncIterator[None]:
        await app[ACQUIRER].start()
        yield
        await app[ACQUIRER].stop()

    app.cleanup_ctx.append(ledger_lifecycle)
    app.router.add_post("/v1/charges", _create_charge)
    app.router.add_get("/v1/charges/{key}", _get_charge)
    app.router.add_get("/v1/charges/by-id/{charge_id}", _get_charge_by_id)
    app.router.add_post("/v1/charges/{charge_id}/capture", _capture_charge)
    app.router.add_post("/v1/charges/{key}/close", _close_charge)
    app.router.add_get("/v1/actions/{charge_id}", _show_action)
    app.router.add_post("/v1/actions/{charge_id}/complete", _complete_action)
    app.router.add_post("/v1/charges/{charge_id}/cancel", _cancel_charge)
    app.router.add_post("/v1/refunds", _create_refund)
    app.router.add_get("/v1/refunds/{key}", _get_refund)
    app.router.add_get("/admin/charges", _list_charges)
    app.router.add_get("/admin/refunds", _list_refunds)
    app.router.add_get("/admin/stats", _stats)
    app.router.add_get("/admin/in-flight", _in_flight)
    app.router.add_get("/healthz", _healthz)
    return app
