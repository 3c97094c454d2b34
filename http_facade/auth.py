"""API-key authentication: ``Authorization: Bearer <key>`` on every non-public route.

A request without a usable key never reaches a handler: it gets 401 with the catalogue's
``authentication_failed`` body and a ``WWW-Authenticate: Bearer`` challenge (RFC 6750).
The key itself is never logged, echoed or put in an error message; the client id it maps
to is put on the request under :data:`http_facade.state.CLIENT_ID` for handlers and the
access log.
"""

from __future__ import annotations

from typing import Final, Protocol

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from domain.error_info import ErrorInfo
from domain.errors import ErrorCode
from http_facade.errors import error_response
from http_facade.state import CLIENT_ID

# Routes anyone may call: probes carry no key, and the API description and its docs page
# are public by design. Listed by route template, so a path that only resembles one of
# them (``/healthz/x``) is not public. (/metrics is on the ops listener only.)
# A provider's notification carries the provider's signature instead of a key.
PUBLIC_ROUTES: Final = frozenset(
    {
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/docs",
        "/asyncapi.json",
        "/schemas/avro/{file}",
        "/v1/notifications/{provider}",
        "/v1/payment_methods/encryption_key",
    }
)

# Far longer than any key we issue; anything longer is refused without a lookup.
_MAX_KEY_LENGTH: Final = 256
_CHALLENGE: Final = 'Bearer realm="paygate"'
_INVALID_CHALLENGE: Final = 'Bearer realm="paygate", error="invalid_token"'


class Authenticator(Protocol):
    async def authenticate(self, api_key: str) -> str | None:
        """The client id the key belongs to; None if it is malformed, unknown or revoked."""
        ...


def auth_middleware(authenticator: Authenticator) -> Middleware:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _is_public(request):
            return await handler(request)
        presented = request.headers.getall(hdrs.AUTHORIZATION, [])
        if not presented:
            return _unauthorized("send an API key as Authorization: Bearer <key>", _CHALLENGE)
        api_key = _bearer_key(presented)
        client_id = await authenticator.authenticate(api_key) if api_key is not None else None
        if client_id is None:
            return _unauthorized("the API key is malformed, unknown or revoked", _INVALID_CHALLENGE)
        request[CLIENT_ID] = client_id
        return await handler(request)

    return authenticate


def _is_public(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical in PUBLIC_ROUTES


def _bearer_key(values: list[str]) -> str | None:
    # Two Authorization headers are ambiguous (which one counts?), so neither does.
    if len(values) != 1:
        return None
    scheme, _, key = values[0].strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or len(key) > _MAX_KEY_LENGTH:
        return None
    return key


def _unauthorized(message: str, challenge: str) -> web.Response:
    return error_response(
        ErrorInfo(ErrorCode.AUTHENTICATION_FAILED, message, param=hdrs.AUTHORIZATION),
        headers={hdrs.WWW_AUTHENTICATE: challenge},
    )
