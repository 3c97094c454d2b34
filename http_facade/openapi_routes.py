"""``GET /openapi.json`` and ``GET /docs``: the API's description, public by design.

The document is ``http_facade/openapi.json``, shipped in the package and served as is; the
docs page is rendered from it once, when the routes are added, by
:func:`http_facade.docs_page.render_docs_page`. Both paths are in
:data:`http_facade.auth.PUBLIC_ROUTES`, so they need no API key and are not rate limited.
"""

from __future__ import annotations

import base64
import hashlib
import json
from importlib import resources
from typing import Any, Final

from aiohttp import web

from http_facade.docs_page import DOCS_STYLE, render_docs_page

OPENAPI_PATH: Final = "/openapi.json"
DOCS_PATH: Final = "/docs"

_DOCUMENT: Final = web.AppKey[bytes]("openapi_document")
_DOCS_PAGE: Final = web.AppKey[str]("openapi_docs_page")

# The page loads nothing and runs nothing: its one inline style block is allowed by hash.
_STYLE_HASH: Final = base64.b64encode(hashlib.sha256(DOCS_STYLE.encode()).digest()).decode()
DOCS_CONTENT_SECURITY_POLICY: Final = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def openapi_document_bytes() -> bytes:
    """The OpenAPI 3.1 document, exactly as shipped in the package."""
    return resources.files("http_facade").joinpath("openapi.json").read_bytes()


def openapi_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(openapi_document_bytes())
    return document


def add_openapi_routes(app: web.Application) -> None:
    raw = openapi_document_bytes()
    app[_DOCUMENT] = raw
    app[_DOCS_PAGE] = render_docs_page(json.loads(raw))
    app.router.add_get(OPENAPI_PATH, serve_openapi)
    app.router.add_get(DOCS_PATH, serve_docs)


async def serve_openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[_DOCUMENT], content_type="application/json")


async def serve_docs(request: web.Request) -> web.Response:
    return web.Response(
        text=request.app[_DOCS_PAGE],
        content_type="text/html",
        headers={"Content-Security-Policy": DOCS_CONTENT_SECURITY_POLICY},
    )
