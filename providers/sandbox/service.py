"""The sandbox acquirer as an HTTP service, for integration tests, the dev stack and chaos.

Endpoints::

    POST /v1/charges            Idempotency-Key header, JSON body -> 200 charge | 400 | 409 | 503
    GET  /v1/charges/{key}      -> 200 charge | 404
    GET  /admin/charges         -> {"charges": [...]}, payer numbers masked
    GET  /admin/stats           -> counts for chaos assertions
    GET  /healthz               -> {"status": "ok"}

The acquirer decides; this module only parses, calls and renders. The ledger is opened
and closed with the app (``cleanup_ctx``), never at import time.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from aiohttp import web

from domain.commands import check_idempotency_key
from domain.errors import ErrorCode, PaygateError
from providers.sandbox.acquirer import SandboxAcquirer
from providers.sandbox.errors import SandboxIdempotencyConflictError, SandboxUnavailableError
from providers.sandbox.wire import admin_charge_json, charge_json, error_json, parse_charge_body

ACQUIRER: web.AppKey[SandboxAcquirer] = web.AppKey("sandbox_acquirer", SandboxAcquirer)

IDEMPOTENCY_HEADER = "Idempotency-Key"


def _error(
    status: int, code: ErrorCode | str, message: str, param: str | None = None
) -> web.Response:
    return web.json_response(error_json(code, message, param), status=status)


def _bad_request(error: PaygateError) -> web.Response:
    return _error(400, error.code, error.message, error.param)


async def _create_charge(request: web.Request) -> web.Response:
    acquirer = request.app[ACQUIRER]
    try:
        key = check_idempotency_key(request.headers.get(IDEMPOTENCY_HEADER), IDEMPOTENCY_HEADER)
    except PaygateError as exc:
        return _bad_request(exc)
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return _error(400, ErrorCode.INVALID_REQUEST, "the body is not valid JSON", "body")
    try:
        params = parse_charge_body(body)
    except PaygateError as exc:
        return _bad_request(exc)
    try:
        record = await acquirer.charge(key, params)
    except SandboxUnavailableError as exc:
        return _error(503, ErrorCode.PROVIDER_UNAVAILABLE, str(exc))
    except SandboxIdempotencyConflictError as exc:
        return _error(409, ErrorCode.IDEMPOTENCY_CONFLICT, str(exc), IDEMPOTENCY_HEADER)
    return web.json_response(charge_json(record))


async def _get_charge(request: web.Request) -> web.Response:
    record = await request.app[ACQUIRER].status(request.match_info["key"])
    if record is None:
        return _error(404, ErrorCode.NOT_FOUND, "no charge with this idempotency key")
    return web.json_response(charge_json(record))


async def _list_charges(request: web.Request) -> web.Response:
    records = await request.app[ACQUIRER].charges()
    return web.json_response({"charges": [admin_charge_json(record) for record in records]})


async def _stats(request: web.Request) -> web.Response:
    stats = await request.app[ACQUIRER].stats()
    return web.json_response(stats.to_json())


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_sandbox_app(acquirer: SandboxAcquirer) -> web.Application:
    app = web.Application()
    app[ACQUIRER] = acquirer

    async def ledger_lifecycle(app: web.Application) -> AsyncIterator[None]:
        await app[ACQUIRER].start()
        yield
        await app[ACQUIRER].stop()

    app.cleanup_ctx.append(ledger_lifecycle)
    app.router.add_post("/v1/charges", _create_charge)
    app.router.add_get("/v1/charges/{key}", _get_charge)
    app.router.add_get("/admin/charges", _list_charges)
    app.router.add_get("/admin/stats", _stats)
    app.router.add_get("/healthz", _healthz)
    return app
