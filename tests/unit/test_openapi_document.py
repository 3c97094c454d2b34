"""The OpenAPI document is valid OpenAPI 3.1 and cannot drift from the code it describes.

Its enums are the domain's (error codes and categories from the catalogue, statuses,
reasons, account types, payment methods, currencies), its operations are the app's routes,
the codes each error response lists have that HTTP status in the catalogue, and its
request schemas name the fields the request models accept. Responses themselves are
checked against it in ``test_openapi_conformance.py``.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import hdrs
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from domain.accounts import AccountType
from domain.currencies import CURRENCY_EXPONENTS
from domain.errors import CATALOGUE, ErrorCategory, ErrorCode, PaygateError
from domain.money import money_from_text
from domain.payments import PaymentMethod
from domain.refunds import RefundReason, RefundStatus
from domain.status import PaymentStatus
from http_facade.app import build_app
from http_facade.auth import PUBLIC_ROUTES
from http_facade.openapi_routes import (
    DOCS_CONTENT_SECURITY_POLICY,
    openapi_document,
    openapi_document_bytes,
)
from http_facade.rate_limit import TokenBuckets
from http_facade.refund_requests import RefundBody
from http_facade.requests import AccountBody, CreatePaymentBody, PaymentMethodBody
from http_facade.webhook_routes import EndpointBody
from telemetry.metrics import Metrics
from tests.support.fake_webhooks import FakeWebhooks
from tests.support.memory_vault import memory_vault

pytestmark = pytest.mark.unit

DOCUMENT = openapi_document()
SCHEMAS = DOCUMENT["components"]["schemas"]
_METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, item[method])
        for path, item in DOCUMENT["paths"].items()
        for method in _METHODS
        if method in item
    ]


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = DOCUMENT
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1.")
    validate(DOCUMENT)


def test_error_codes_are_the_catalogue() -> None:
    assert SCHEMAS["ErrorCode"]["enum"] == [code.value for code in ErrorCode]
    assert set(SCHEMAS["ErrorCode"]["enum"]) == {code.value for code in CATALOGUE}
    assert SCHEMAS["ErrorCategory"]["enum"] == [category.value for category in ErrorCategory]


@pytest.mark.parametrize(
    ("schema", "values"),
    [
        ("PaymentStatus", [s.value for s in PaymentStatus]),
        ("RefundStatus", [s.value for s in RefundStatus]),
        ("RefundReason", [r.value for r in RefundReason]),
        ("AccountType", [t.value for t in AccountType]),
        ("PaymentMethod", [m.value for m in PaymentMethod]),
        ("Currency", sorted(CURRENCY_EXPONENTS)),
    ],
)
def test_enums_are_the_domains(schema: str, values: list[str]) -> None:
    assert SCHEMAS[schema]["enum"] == values


def test_each_error_response_lists_codes_of_its_status() -> None:
    checked = 0
    for method, path, operation in operations():
        for status, response in operation["responses"].items():
            schema = resolve(response).get("content", {}).get("application/json", {})
            codes = schema.get("schema", {}).get("properties", {}).get("error", {})
            for code in codes.get("properties", {}).get("code", {}).get("enum", []):
                assert CATALOGUE[ErrorCode(code)].http_status == int(status), (
                    f"{method} {path} {status} lists {code}"
                )
                checked += 1
    assert checked > 0


async def _app_client() -> TestClient[Any, Any]:
    nothing: Any = None  # the routes are only listed or public; no collaborator is called
    app = build_app(
        publisher=nothing,
        queries=nothing,
        refunds=nothing,
        waiter=nothing,
        metrics=Metrics(CollectorRegistry()),
        account_key=b"k",
        vault=memory_vault(b"k"),
        authenticator=nothing,
        rate_limiter=TokenBuckets(rate_per_s=1.0, burst=1),
        webhooks=FakeWebhooks(),
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    client = await _app_client()
    yield client
    await client.close()


def test_operations_are_the_apps_routes(client: TestClient[Any, Any]) -> None:
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in client.app.router.routes()
        if route.resource is not None and route.method != hdrs.METH_HEAD
    }
    assert routes == {(method, path) for method, path, _ in operations()}


def test_public_operations_are_the_public_routes() -> None:
    public = {path for _, path, operation in operations() if operation.get("security") == []}
    assert public == PUBLIC_ROUTES
    assert DOCUMENT["security"] == [{"bearerAuth": []}]


def test_every_operation_lists_the_answers_its_middleware_can_give() -> None:
    for method, path, operation in operations():
        statuses = set(operation["responses"])
        assert "500" in statuses, (method, path)
        if path not in PUBLIC_ROUTES:
            # 503: the API-key lookup alone needs the database, which may be down.
            assert {"401", "429", "503"} <= statuses, (method, path)
            assert "WWW-Authenticate" in resolve(operation["responses"]["401"])["headers"]
            assert "Retry-After" in resolve(operation["responses"]["429"])["headers"]
            assert "Retry-After" in resolve(operation["responses"]["503"])["headers"]
        if "requestBody" in operation:
            assert {"400", "408", "413", "415"} <= statuses, (method, path)
        for status, response in operation["responses"].items():
            assert "X-Request-Id" in resolve(response)["headers"], (method, path, status)


@pytest.mark.parametrize(
    ("schema", "model"),
    [
        ("CreatePaymentRequest", CreatePaymentBody),
        ("Account", AccountBody),
        ("CreateRefundRequest", RefundBody),
        ("CreateWebhookEndpointRequest", EndpointBody),
        ("CreatePaymentMethodRequest", PaymentMethodBody),
    ],
)
def test_request_schemas_are_the_request_models(schema: str, model: type[BaseModel]) -> None:
    documented = SCHEMAS[schema]
    fields = {field.alias or name: field for name, field in model.model_fields.items()}
    assert documented["additionalProperties"] is False
    assert set(documented["properties"]) == set(fields)
    required = {name for name, field in fields.items() if field.is_required()}
    assert set(documented.get("required", [])) == required


# A currency with three decimals, so every example below with at most three decimals is
# judged by its value, not refused for its decimal places.
_THREE_DECIMALS = "BHD"


def _api_accepts(text: str) -> bool:
    try:
        money_from_text(text, _THREE_DECIMALS)
    except PaygateError:
        return False
    return True


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        ("10.50", True),
        ("1000", True),
        ("1", True),
        ("1.0", True),
        ("100.000", True),
        ("0.5", True),
        ("0.01", True),
        ("0.10", True),
        ("0.001", True),
        ("999999999999", True),
        # Zero, however written: the API answers invalid_amount, so the schema refuses it.
        ("0", False),
        ("0.0", False),
        ("0.00", False),
        ("0.000", False),
        ("0.0000000000", False),
        ("000", False),
        ("00", False),
        ("00.10", False),
        # Not plain positional decimal text.
        ("1e2", False),
        ("-1", False),
        ("+1", False),
        ("01", False),
        ("1.", False),
        (".5", False),
        (" 1", False),
        ("1,00", False),
        ("", False),
    ],
)
def test_amounts_are_positive_decimal_strings_as_the_api_accepts(text: str, accepted: bool) -> None:
    """The request pattern agrees with the API's own parser on every example."""
    pattern = SCHEMAS["AmountText"]["pattern"]
    assert SCHEMAS["AmountText"]["type"] == "string"
    assert bool(re.search(pattern, text)) is accepted
    assert _api_accepts(text) is accepted


def test_payments_and_refunds_take_their_amount_as_amount_text() -> None:
    payment = SCHEMAS["CreatePaymentRequest"]["properties"]["amount"]
    assert payment == {"$ref": "#/components/schemas/AmountText"}
    refund_amount = SCHEMAS["CreateRefundRequest"]["properties"]["amount"]
    assert {"$ref": "#/components/schemas/AmountText"} in refund_amount["anyOf"]


async def test_openapi_json_serves_the_packaged_document(client: TestClient[Any, Any]) -> None:
    async with client.get("/openapi.json") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.read() == openapi_document_bytes()


async def test_docs_page_lists_every_operation_and_loads_nothing(
    client: TestClient[Any, Any],
) -> None:
    async with client.get("/docs") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert response.headers["Content-Security-Policy"] == DOCS_CONTENT_SECURITY_POLICY
        page = await response.text()
    for _method, path, operation in operations():
        assert f"<code>{path}</code>" in page
        assert html.escape(operation["summary"]) in page
    for name in SCHEMAS:
        assert f'id="schema-{name}"' in page
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "default-src 'none'" in DOCS_CONTENT_SECURITY_POLICY
