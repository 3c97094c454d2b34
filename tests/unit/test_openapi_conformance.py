"""The OpenAPI document tells the truth: real responses of the real app, validated against it.

The application is ``build_app`` itself, behind aiohttp's test server, with an in-memory
world behind its ports (a published payment or refund is stored as succeeded, the way the
pipeline would store it a moment later). Every operation is driven through its answers,
success and failure, and every response is checked against the document: its status is
listed for the operation, its body matches the schema for its content type (JSON Schema
2020-12, formats checked), and its headers are the documented ones, required ones present.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator, FormatChecker
from prometheus_client import CollectorRegistry
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.idempotency import OrderPayment
from domain.money import money_from_decimal
from domain.next_action import NextAction, NextActionType
from domain.payment_view import PaymentView
from domain.payments import CreatePayment
from domain.refund_view import RefundView
from domain.refunds import RefundPayment, RefundStatus
from domain.status import PaymentStatus
from http_facade.app import build_app
from http_facade.openapi_routes import openapi_document
from http_facade.rate_limit import TokenBuckets
from http_facade.webhook_url_check import EndpointUrlCheck
from persistence.availability import is_database_unavailable
from telemetry.metrics import Metrics
from telemetry.readiness import Readiness
from tests.support.app_client import started_client
from tests.support.builders import PAYEE_IBAN, SUCCESS_CARD
from tests.support.fake_webhooks import FakeWebhooks
from tests.support.memory_vault import memory_vault
from tests.support.result_watch import WatchByWaiting, watch_by_waiting

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
ACCOUNT_KEY = b"openapi-test-key"
KEYS = {
    "pgk_0123456789abcdef_" + "a" * 64: "client-1",
    "pgk_fedcba9876543210_" + "b" * 64: "client-2",
}
KEY_1, KEY_2 = KEYS
_DOCUMENT_URI = "urn:paygate:openapi"
_PAYMENT_ID = "pay_" + "0" * 32
_REFUND_ID = "ref_" + "0" * 32
JSON_HEADERS = {"Content-Type": "application/json"}


# --- the validator --------------------------------------------------------------------------


class ResponseValidator:
    """Checks responses against the document and remembers which (operation, status) it saw."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(_DOCUMENT_URI, resource)
        self.seen: set[tuple[str, str, int]] = set()

    async def check(self, method: str, template: str, response: ClientResponse) -> Any:
        """Validate ``response`` as an answer of ``method template``; return its body."""
        raw = await response.read()
        status = str(response.status)
        responses = ["paths", template, method.lower(), "responses"]
        listed = self._node(responses)
        assert status in listed, (
            f"{method} {template} answered {status}, which the document does not list: "
            f"{raw[:300]!r}"
        )
        where = self._follow([*responses, status])
        documented = self._node(where)
        for name, header_pointer in self._headers(where).items():
            header = self._node(header_pointer)
            if name in response.headers:
                self._validate(response.headers[name], [*header_pointer, "schema"], name)
            else:
                assert not header.get("required"), f"{method} {template} {status}: no {name}"
        media_type = response.content_type
        assert media_type in documented.get("content", {}), (
            f"{method} {template} {status}: undocumented content type {media_type}"
        )
        body: Any = json.loads(raw) if media_type == "application/json" else raw.decode()
        self._validate(body, [*where, "content", media_type, "schema"], f"{method} {template}")
        self.seen.add((method.upper(), template, response.status))
        return body

    def _headers(self, where: list[str]) -> dict[str, list[str]]:
        documented = self._node(where).get("headers", {})
        return {name: self._follow([*where, "headers", name]) for name in documented}

    def _validate(self, instance: object, pointer: list[str], what: str) -> None:
        escaped = "/".join(p.replace("~", "~0").replace("/", "~1") for p in pointer)
        validator = Draft202012Validator(
            {"$ref": f"{_DOCUMENT_URI}#/{escaped}"},
            registry=self.registry,
            format_checker=FormatChecker(),
        )
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        assert not errors, f"{what} does not match the document:\n" + "\n".join(
            f"  at /{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
        )

    def _follow(self, pointer: list[str]) -> list[str]:
        """The pointer, with a ``$ref`` at its end followed to what it names."""
        node = self._node(pointer)
        while "$ref" in node:
            pointer = node["$ref"].removeprefix("#/").split("/")
            node = self._node(pointer)
        return pointer

    def _node(self, pointer: list[str]) -> Any:
        node: Any = self.document
        for part in pointer:
            node = node[part]
        return node


# --- an in-memory world behind the facade's ports ---------------------------------------------


@dataclass
class World:
    """Publisher, queries, refunds and waiter in one: published commands become stored,
    final payments and refunds, as the pipeline would make them."""

    payments: dict[str, PaymentView] = field(default_factory=dict)
    refunds: dict[str, RefundView] = field(default_factory=dict)
    outcome: PaymentStatus = PaymentStatus.SUCCEEDED
    publish_error: Exception | None = None
    final_within_wait: bool = False
    webhooks: FakeWebhooks = field(default_factory=FakeWebhooks)
    dns: dict[str, list[str]] = field(
        default_factory=lambda: {
            "hooks.shop.example": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
            "intranet.shop.example": ["93.184.215.14", "10.20.0.5"],
            "localhost": ["127.0.0.1"],
            "metadata.shop.example": ["169.254.169.254"],
        }
    )

    async def resolve(self, host: str, port: int) -> list[str]:
        return self.dns.get(host, [])

    async def publish_create_payment(self, command: CreatePayment) -> None:
        if self.publish_error is not None:
            raise self.publish_error
        failed = self.outcome is PaymentStatus.FAILED
        self.payments[command.payment_request_id] = PaymentView(
            payment_request_id=command.payment_request_id,
            order_id=command.order_id,
            user_id=command.user_id,
            idempotency_key=command.idempotency_key,
            status=self.outcome,
            amount=command.amount,
            payment_method=command.payment_method,
            payer=command.payer.ref(ACCOUNT_KEY),
            payee=command.payee.ref(ACCOUNT_KEY),
            provider="sandbox",
            provider_reference=None if failed else "ch_1",
            error=None if not failed else _declined(),
            created_at=NOW,
            updated_at=NOW,
            parameters_hash=command.parameters_fingerprint(ACCOUNT_KEY),
            client_id=command.client_id,
            next_action=(
                NextAction.of(NextActionType.QR_CODE, "https://qr.alipay.com/bax01", NOW)
                if self.outcome is PaymentStatus.REQUIRES_ACTION
                else None
            ),
        )

    async def publish_refund(self, command: RefundPayment) -> None:
        if self.publish_error is not None:
            raise self.publish_error
        payment = self.payments[command.payment_request_id]
        amount = command.amount or replace(payment.amount, minor_units=payment.refundable_minor)
        refunded = payment.refunded_minor + amount.minor_units
        self.payments[payment.payment_request_id] = replace(
            payment,
            refunded_minor=refunded,
            status=PaymentStatus.REFUNDED
            if refunded == payment.amount.minor_units
            else PaymentStatus.PARTIALLY_REFUNDED,
        )
        self.refunds[command.refund_id] = RefundView(
            refund_id=command.refund_id,
            payment_request_id=command.payment_request_id,
            order_id=command.order_id,
            idempotency_key=command.idempotency_key,
            amount=amount,
            reason=command.reason,
            status=RefundStatus.SUCCEEDED,
            provider="sandbox",
            provider_reference="re_1",
            error=None,
            created_at=NOW,
            updated_at=NOW,
            parameters_hash=command.parameters_fingerprint(),
        )

    async def publish_capture(self, command: CapturePayment) -> None:
        if self.publish_error is not None:
            raise self.publish_error
        payment = self.payments[command.payment_request_id]
        captured = None
        if command.amount is not None:
            captured = money_from_decimal(command.amount, payment.amount.currency).minor_units
        self.payments[payment.payment_request_id] = replace(
            payment, status=PaymentStatus.SUCCEEDED, captured_minor=captured
        )

    async def publish_cancel(self, command: CancelPayment) -> None:
        if self.publish_error is not None:
            raise self.publish_error
        payment = self.payments[command.payment_request_id]
        self.payments[payment.payment_request_id] = replace(payment, status=PaymentStatus.CANCELED)

    async def get_payment(self, payment_request_id: str) -> PaymentView | None:
        return self.payments.get(payment_request_id)

    async def payment_with_refunds(
        self, payment_request_id: str
    ) -> tuple[PaymentView, list[RefundView]] | None:
        view = self.payments.get(payment_request_id)
        if view is None:
            return None
        return view, [
            r for r in self.refunds.values() if r.payment_request_id == view.payment_request_id
        ]

    async def order_payments(self, order_id: str, client_id: str | None) -> list[OrderPayment]:
        return [
            OrderPayment(p.payment_request_id, p.idempotency_key, p.status, key_expired=False)
            for p in self._of(client_id, order_id)
        ]

    async def client_order_page(
        self, client_id: str, order_id: str, *, limit: int, starting_after: str | None
    ) -> list[PaymentView]:
        page = list(self._of(client_id, order_id))
        if starting_after is not None:
            ids = [p.payment_request_id for p in page]
            page = page[ids.index(starting_after) + 1 :] if starting_after in ids else []
        return page[:limit]

    def _of(self, client_id: str | None, order_id: str) -> Iterator[PaymentView]:
        for payment in self.payments.values():
            if payment.order_id == order_id and payment.client_id == client_id:
                yield payment

    async def get(self, refund_id: str) -> RefundView | None:
        return self.refunds.get(refund_id)

    async def of_payments(self, payment_request_ids: Sequence[str]) -> dict[str, list[RefundView]]:
        return {
            pid: [r for r in self.refunds.values() if r.payment_request_id == pid]
            for pid in payment_request_ids
        }

    async def wait_for_final(
        self, payment_request_id: str, timeout_s: float, *, refusal_event_id: str | None = None
    ) -> bool:
        return self.final_within_wait

    def watch(
        self, payment_request_id: str, *, refusal_event_id: str | None = None
    ) -> contextlib.nullcontext[WatchByWaiting]:
        return watch_by_waiting(self.wait_for_final, payment_request_id)


def _declined() -> ErrorInfo:
    return ErrorInfo(ErrorCode.PAYMENT_DECLINED, "declined", decline_code="generic_decline")


class KeyAuthenticator:
    async def authenticate(self, api_key: str) -> str | None:
        return KEYS.get(api_key)


@dataclass
class Facade:
    client: TestClient[Any, Any]
    world: World
    validator: ResponseValidator

    async def call(
        self,
        method: str,
        template: str,
        path: str | None = None,
        *,
        key: str | None = KEY_1,
        **kwargs: Any,
    ) -> tuple[int, Any, ClientResponse]:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        async with self.client.request(
            method, path or template, headers=headers, **kwargs
        ) as response:
            body = await self.validator.check(method, template, response)
            return response.status, body, response


MakeFacade = Callable[..., Awaitable[Facade]]


@pytest.fixture(scope="module")
def validator() -> ResponseValidator:
    return ResponseValidator(openapi_document())


@pytest.fixture
async def make_facade(validator: ResponseValidator) -> AsyncIterator[MakeFacade]:
    clients: list[TestClient[Any, Any]] = []

    async def make(
        *,
        rate_limiter: TokenBuckets | None = None,
        body_timeout_s: float = 15.0,
        readiness: Readiness | None = None,
        authenticator: Any = None,
        development: bool = False,
    ):
        world = World()
        app = build_app(
            publisher=world,
            queries=world,
            refunds=world,
            waiter=world,
            metrics=Metrics(CollectorRegistry()),
            account_key=ACCOUNT_KEY,
            vault=memory_vault(ACCOUNT_KEY),
            authenticator=authenticator or KeyAuthenticator(),
            is_database_outage=is_database_unavailable,
            rate_limiter=rate_limiter or TokenBuckets(rate_per_s=1000.0, burst=1_000_000),
            body_timeout_s=body_timeout_s,
            readiness=readiness,
            clock=lambda: NOW,
            webhooks=world.webhooks,
            webhook_url_check=EndpointUrlCheck(development=development, resolver=world.resolve),
        )
        client = await started_client(app)
        clients.append(client)
        return Facade(client, world, validator)

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def facade(make_facade: MakeFacade) -> Facade:
    return await make_facade()


def payment_body(order_id: str = "order-1", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "userId": "user-1",
        "orderId": order_id,
        "amount": "10.50",
        "currency": "EUR",
        "paymentMethod": "card",
        "payerAccount": {"type": "card", "number": SUCCESS_CARD, "holderName": "Ada"},
        "payeeAccount": {"type": "iban", "number": PAYEE_IBAN},
        "metadata": {"cart": "42"},
    }
    body.update(changes)
    return body


PAYMENTS = "/v1/payments"
PAYMENT = "/v1/payments/{paymentRequestId}"
REFUNDS = "/v1/payments/{paymentRequestId}/refunds"
REFUND = "/v1/refunds/{refundId}"
CAPTURE = "/v1/payments/{paymentRequestId}/capture"
CANCEL = "/v1/payments/{paymentRequestId}/cancel"


async def _create(facade: Facade, order_id: str, key: str, **headers: str) -> dict[str, Any]:
    status, body, _ = await facade.call(
        "POST",
        PAYMENTS,
        json=payment_body(order_id),
        headers={"Idempotency-Key": key, **headers},
    )
    assert status in (200, 202)
    result: dict[str, Any] = body
    return result


# --- payments -------------------------------------------------------------------------------


async def test_create_read_replay_and_wait(facade: Facade) -> None:
    status, accepted, response = await facade.call(
        "POST", PAYMENTS, json=payment_body(), headers={"Idempotency-Key": "k-1"}
    )
    assert status == 202
    payment_id = accepted["paymentRequestId"]
    assert response.headers["Location"] == f"/v1/payments/{payment_id}"

    status, payment, _ = await facade.call("GET", PAYMENT, f"/v1/payments/{payment_id}")
    assert (status, payment["status"]) == (200, "succeeded")

    # The same key and parameters again: the stored, final payment, replayed.
    status, replayed, response = await facade.call(
        "POST", PAYMENTS, json=payment_body(), headers={"Idempotency-Key": "k-1"}
    )
    assert status == 200
    assert response.headers["Idempotent-Replayed"] == "true"
    assert replayed == payment

    # Prefer: wait=N on a new order, with the outcome in time: 200 with Preference-Applied.
    facade.world.final_within_wait = True
    status, waited, response = await facade.call(
        "POST",
        PAYMENTS,
        json=payment_body("order-wait"),
        headers={"Prefer": "wait=5", "X-Request-Id": "req-1"},
    )
    assert status == 200
    assert response.headers["Preference-Applied"] == "wait=5"
    assert response.headers["X-Request-Id"] == "req-1"
    assert waited["status"] == "succeeded"


async def test_a_payment_waiting_for_its_payer_shows_its_next_action(facade: Facade) -> None:
    facade.world.outcome = PaymentStatus.REQUIRES_ACTION
    facade.world.final_within_wait = True
    status, waited, response = await facade.call(
        "POST",
        PAYMENTS,
        json=payment_body("order-qr"),
        headers={"Prefer": "wait=5", "Idempotency-Key": "k-qr"},
    )
    # Prefer: wait answers as soon as the payer must act: only the client can show it.
    assert (status, waited["status"]) == (200, "requires_action")
    assert response.headers["Preference-Applied"] == "wait=5"
    assert waited["nextAction"] == {
        "type": "qr_code",
        "qrCode": "https://qr.alipay.com/bax01",
        "expiresAt": "2026-03-01T12:00:00Z",
    }
    assert waited["paymentResult"] is False
    # The same key again replays the waiting payment with its action, publishing nothing.
    status, replayed, response = await facade.call(
        "POST", PAYMENTS, json=payment_body("order-qr"), headers={"Idempotency-Key": "k-qr"}
    )
    assert (status, replayed) == (200, waited)
    assert response.headers["Idempotent-Replayed"] == "true"
    # Another payment for the order is refused while the payer may still pay this one.
    status, refused, _ = await facade.call(
        "POST", PAYMENTS, json=payment_body("order-qr"), headers={"Idempotency-Key": "k-qr2"}
    )
    assert (status, refused["error"]["code"]) == (409, "order_already_paid")


async def test_a_failed_payment_with_its_error_matches_the_schema(facade: Facade) -> None:
    facade.world.outcome = PaymentStatus.FAILED
    created = await _create(facade, "order-failed", "k-f")
    status, payment, _ = await facade.call(
        "GET", PAYMENT, f"/v1/payments/{created['paymentRequestId']}"
    )
    assert status == 200
    assert payment["error"]["decline_code"] == "generic_decline"

    facade.world.outcome = PaymentStatus.SUCCEEDED
    status, body, _ = await facade.call(
        "POST", PAYMENTS, json=payment_body("order-failed"), headers={"Idempotency-Key": "k-f2"}
    )
    assert (status, body["error"]["code"]) == (409, "new_attempt_required")


async def test_list_pages_through_an_order(facade: Facade) -> None:
    facade.world.outcome = PaymentStatus.FAILED
    for attempt in range(3):
        await facade.call(
            "POST",
            PAYMENTS,
            json=payment_body("order-list", newAttempt=attempt > 0),
            headers={"Idempotency-Key": f"k-list-{attempt}"},
        )
    status, first, _ = await facade.call(
        "GET", PAYMENTS, params={"orderId": "order-list", "limit": "2"}
    )
    assert (status, len(first["data"]), first["hasMore"]) == (200, 2, True)
    status, rest, _ = await facade.call(
        "GET",
        PAYMENTS,
        params={"orderId": "order-list", "startingAfter": first["nextStartingAfter"]},
    )
    assert (status, len(rest["data"]), rest["hasMore"], rest["nextStartingAfter"]) == (
        200,
        1,
        False,
        None,
    )
    # Another client sees none of them.
    status, other, _ = await facade.call(
        "GET", PAYMENTS, params={"orderId": "order-list"}, key=KEY_2
    )
    assert (status, other["data"]) == (200, [])


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({}, id="no-orderId"),
        pytest.param({"orderId": "order 1"}, id="bad-orderId"),
        pytest.param({"orderId": "o", "limit": "0"}, id="limit-0"),
        pytest.param({"orderId": "o", "limit": "101"}, id="limit-101"),
        pytest.param({"orderId": "o", "startingAfter": "x"}, id="bad-cursor"),
        pytest.param({"orderId": "o", "page": "2"}, id="unknown-parameter"),
    ],
)
async def test_list_refuses_a_bad_query(facade: Facade, params: dict[str, str]) -> None:
    status, body, _ = await facade.call("GET", PAYMENTS, params=params)
    assert (status, body["error"]["code"]) == (400, "invalid_request")


async def test_an_unknown_query_parameter_that_may_be_a_number_is_not_echoed(
    facade: Facade,
) -> None:
    params = {"orderId": "o", SUCCESS_CARD: "x", "limit": "2"}
    status, body, _ = await facade.call("GET", PAYMENTS, params=params)
    assert (status, body["error"]["code"]) == (400, "invalid_request")
    assert "param" not in body["error"]
    assert "4242" not in body["error"]["message"]


@pytest.mark.parametrize(
    ("request_kwargs", "status", "code"),
    [
        pytest.param({"json": payment_body(amount=0.1)}, 400, "invalid_amount", id="amount"),
        pytest.param({"json": payment_body(currency="XAU")}, 400, "unsupported_currency", id="ccy"),
        pytest.param({"json": payment_body(extra=1)}, 400, "invalid_request", id="extra-field"),
        pytest.param({"data": b"{", "headers": JSON_HEADERS}, 400,
                     "invalid_request", id="bad-json"),
        pytest.param({"data": b"[]", "headers": JSON_HEADERS}, 400,
                     "invalid_request", id="not-object"),
        pytest.param({"json": payment_body(), "headers": {"Prefer": "wait=0"}}, 400,
                     "invalid_request", id="prefer"),
        pytest.param({"json": payment_body(), "headers": {"Idempotency-Key": "a b"}}, 400,
                     "invalid_request", id="key"),
        pytest.param({"data": b"userId=1"}, 415, "unsupported_media_type", id="form"),
        pytest.param({"data": b'"' + b"x" * 70_000 + b'"', "headers": JSON_HEADERS}, 413,
                     "request_too_large", id="too-large"),
    ],
)  # fmt: skip
async def test_create_refusals(
    facade: Facade, request_kwargs: dict[str, Any], status: int, code: str
) -> None:
    answered, body, _ = await facade.call("POST", PAYMENTS, **request_kwargs)
    assert (answered, body["error"]["code"]) == (status, code)
    assert facade.world.payments == {}


async def test_create_conflicts(facade: Facade) -> None:
    await _create(facade, "order-c", "k-c")
    status, body, _ = await facade.call(
        "POST",
        PAYMENTS,
        json=payment_body("order-c", amount="11.00"),
        headers={"Idempotency-Key": "k-c"},
    )
    assert (status, body["error"]["code"]) == (409, "idempotency_conflict")
    status, body, _ = await facade.call(
        "POST", PAYMENTS, json=payment_body("order-c"), headers={"Idempotency-Key": "k-c2"}
    )
    assert (status, body["error"]["code"]) == (409, "order_already_paid")


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        pytest.param(
            PaygateError(ErrorCode.SERVICE_UNAVAILABLE, "Kafka said no"),
            503,
            "service_unavailable",
            id="kafka-down",
        ),
        pytest.param(RuntimeError("a bug"), 500, "internal_error", id="bug"),
    ],
)
async def test_create_when_publishing_fails(
    facade: Facade, error: Exception, status: int, code: str
) -> None:
    facade.world.publish_error = error
    answered, body, _ = await facade.call("POST", PAYMENTS, json=payment_body())
    assert (answered, body["error"]["code"]) == (status, code)


async def test_a_body_that_never_arrives_is_408(make_facade: MakeFacade) -> None:
    facade = await make_facade(body_timeout_s=0.2)
    never = asyncio.Event()

    async def stalled_body() -> AsyncIterator[bytes]:
        yield b'{"userId": '
        await never.wait()

    status, body, _ = await facade.call(
        "POST", PAYMENTS, data=stalled_body(), headers={"Content-Type": "application/json"}
    )
    assert (status, body["error"]["code"]) == (408, "request_timeout")


async def test_read_refusals(facade: Facade) -> None:
    created = await _create(facade, "order-r", "k-r")
    path = f"/v1/payments/{created['paymentRequestId']}"
    for template, target, key in [
        (PAYMENT, "/v1/payments/not-an-id", KEY_1),
        (PAYMENT, f"/v1/payments/{_PAYMENT_ID}", KEY_1),
        (PAYMENT, path, KEY_2),  # another client's payment
        (REFUND, f"/v1/refunds/{_REFUND_ID}", KEY_1),
        (REFUND, "/v1/refunds/nope", KEY_1),
    ]:
        status, body, _ = await facade.call("GET", template, target, key=key)
        assert (status, body["error"]["code"]) == (404, "not_found")


@pytest.mark.parametrize(
    ("method", "template", "path"),
    [
        ("POST", PAYMENTS, None),
        ("GET", PAYMENTS, "/v1/payments?orderId=o"),
        ("GET", PAYMENT, f"/v1/payments/{_PAYMENT_ID}"),
        ("POST", REFUNDS, f"/v1/payments/{_PAYMENT_ID}/refunds"),
        ("GET", REFUND, f"/v1/refunds/{_REFUND_ID}"),
        ("GET", "/v1/webhook_endpoints", None),
        ("POST", "/v1/webhook_endpoints", None),
    ],
)
@pytest.mark.parametrize("key", [None, "pgk_0123456789abcdef_" + "f" * 64])
async def test_every_private_operation_is_401_without_a_good_key(
    facade: Facade, method: str, template: str, path: str | None, key: str | None
) -> None:
    status, body, response = await facade.call(method, template, path, key=key, json={})
    assert (status, body["error"]["code"]) == (401, "authentication_failed")
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


class UnreachableKeyStore:
    async def authenticate(self, api_key: str) -> str | None:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")


@pytest.mark.parametrize(
    ("method", "template", "path"),
    [
        ("POST", PAYMENTS, None),
        ("GET", PAYMENTS, "/v1/payments?orderId=o"),
        ("GET", PAYMENT, f"/v1/payments/{_PAYMENT_ID}"),
        ("POST", REFUNDS, f"/v1/payments/{_PAYMENT_ID}/refunds"),
        ("POST", CAPTURE, f"/v1/payments/{_PAYMENT_ID}/capture"),
        ("GET", REFUND, f"/v1/refunds/{_REFUND_ID}"),
        ("GET", "/v1/webhook_endpoints", None),
        ("POST", "/v1/webhook_endpoints", None),
    ],
)
async def test_every_private_operation_is_503_while_the_database_is_down(
    make_facade: MakeFacade, method: str, template: str, path: str | None
) -> None:
    facade = await make_facade(authenticator=UnreachableKeyStore())
    status, body, response = await facade.call(method, template, path, json={})
    assert (status, body["error"]["code"]) == (503, "service_unavailable")
    assert int(response.headers["Retry-After"]) >= 1


async def test_over_the_rate_limit_is_429(make_facade: MakeFacade) -> None:
    facade = await make_facade(rate_limiter=TokenBuckets(rate_per_s=1 / 60, burst=1))
    target = f"/v1/payments/{_PAYMENT_ID}"
    status, _, _ = await facade.call("GET", PAYMENT, target)
    assert status == 404
    status, body, response = await facade.call("GET", PAYMENT, target)
    assert (status, body["error"]["code"]) == (429, "rate_limited")
    assert int(response.headers["Retry-After"]) >= 1


# --- refunds --------------------------------------------------------------------------------


async def test_refund_create_read_and_replay(facade: Facade) -> None:
    payment = await _create(facade, "order-refund", "k-p")
    payment_id = payment["paymentRequestId"]
    refunds = f"/v1/payments/{payment_id}/refunds"
    refund_body = {"amount": "4.00", "currency": "EUR", "reason": "requested_by_customer"}

    status, accepted, response = await facade.call(
        "POST", REFUNDS, refunds, json=refund_body, headers={"Idempotency-Key": "r-1"}
    )
    assert status == 202
    refund_id = accepted["refundId"]
    assert response.headers["Location"] == f"/v1/refunds/{refund_id}"

    status, refund, _ = await facade.call("GET", REFUND, f"/v1/refunds/{refund_id}")
    assert (status, refund["status"], refund["amount"]) == (200, "succeeded", "4.00")

    status, replayed, response = await facade.call(
        "POST", REFUNDS, refunds, json=refund_body, headers={"Idempotency-Key": "r-1"}
    )
    assert (status, response.headers["Idempotent-Replayed"]) == (200, "true")
    assert replayed == refund

    status, read, _ = await facade.call("GET", PAYMENT, f"/v1/payments/{payment_id}")
    assert (status, read["status"], read["refundedAmount"]) == (200, "partially_refunded", "4.00")
    assert read["refunds"] == [refund]

    # The rest, awaited, without a body at all.
    facade.world.final_within_wait = True
    status, rest, response = await facade.call(
        "POST",
        REFUNDS,
        refunds,
        headers={"Prefer": "wait=3", "Content-Type": "application/json", "Idempotency-Key": "r-2"},
    )
    assert (status, rest["amount"], response.headers["Preference-Applied"]) == (
        200,
        "6.50",
        "wait=3",
    )


async def test_refund_refusals(facade: Facade) -> None:
    paid = await _create(facade, "order-rr", "k-rr")
    refunds = f"/v1/payments/{paid['paymentRequestId']}/refunds"
    facade.world.outcome = PaymentStatus.FAILED
    failed = await _create(facade, "order-rf", "k-rf")
    failed_refunds = f"/v1/payments/{failed['paymentRequestId']}/refunds"
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        (refunds, {"json": {"amount": "1.00", "currency": "USD"}}, 400, "currency_mismatch"),
        (refunds, {"json": {"amount": "1.00"}}, 400, "invalid_request"),
        (refunds, {"json": {"amount": 1, "currency": "EUR"}}, 400, "invalid_amount"),
        (refunds, {"json": {"reason": "bored"}}, 400, "invalid_request"),
        (refunds, {"data": b"[1]", "headers": JSON_HEADERS}, 400, "invalid_request"),
        (refunds, {"data": b"{}"}, 415, "unsupported_media_type"),
        (refunds, {"json": {"amount": "99.00", "currency": "EUR"}}, 409, "refund_exceeds_captured"),
        (failed_refunds, {"json": {}}, 409, "payment_not_refundable"),
        (f"/v1/payments/{_PAYMENT_ID}/refunds", {"json": {}}, 404, "not_found"),
        ("/v1/payments/nope/refunds", {"json": {}}, 404, "not_found"),
    ]
    for number, (path, kwargs, status, code) in enumerate(cases):
        headers = {"Idempotency-Key": f"r-refused-{number}", **kwargs.pop("headers", {})}
        answered, body, _ = await facade.call("POST", REFUNDS, path, headers=headers, **kwargs)
        assert (answered, body["error"]["code"]) == (status, code), path
    assert facade.world.refunds == {}

    await facade.call("POST", REFUNDS, refunds, json={}, headers={"Idempotency-Key": "r"})
    status, body, _ = await facade.call(
        "POST", REFUNDS, refunds, json={"reason": "other"}, headers={"Idempotency-Key": "r"}
    )
    assert (status, body["error"]["code"]) == (409, "idempotency_conflict")


async def test_a_refund_without_an_idempotency_key_is_refused_and_changes_nothing(
    facade: Facade,
) -> None:
    """A retry of a keyless refund could not be told from a new one: no key, no refund."""
    paid = await _create(facade, "order-nokey", "k-nokey")
    refunds = f"/v1/payments/{paid['paymentRequestId']}/refunds"
    kwargs: dict[str, Any]
    for kwargs in ({"json": {}}, {"json": {"amount": "1.00", "currency": "EUR"}}, {}):
        status, body, _ = await facade.call("POST", REFUNDS, refunds, **kwargs)
        assert (status, body["error"]["code"], body["error"]["param"]) == (
            400,
            "invalid_request",
            "Idempotency-Key",
        )
        assert "Idempotency-Key" in body["error"]["message"]
    # Checked first: even an unknown payment's refund is refused for the missing header.
    status, body, _ = await facade.call(
        "POST", REFUNDS, f"/v1/payments/{_PAYMENT_ID}/refunds", json={}
    )
    assert (status, body["error"]["param"]) == (400, "Idempotency-Key")
    assert facade.world.refunds == {}
    status, payment, _ = await facade.call(
        "GET", PAYMENT, f"/v1/payments/{paid['paymentRequestId']}"
    )
    assert (status, payment["refundedAmount"], payment["refunds"]) == (200, "0.00", [])


# --- public routes --------------------------------------------------------------------------


async def test_authorize_then_capture(facade: Facade) -> None:
    facade.world.outcome = PaymentStatus.AUTHORIZED
    status, created, _ = await facade.call(
        "POST",
        PAYMENTS,
        json={**payment_body("order-capture"), "capture": False},
        headers={"Idempotency-Key": "k-c"},
    )
    assert status == 202
    payment_id = created["paymentRequestId"]
    status, read, _ = await facade.call("GET", PAYMENT, f"/v1/payments/{payment_id}")
    assert (status, read["status"], read["paymentResult"]) == (200, "authorized", False)

    capture = f"/v1/payments/{payment_id}/capture"
    status, accepted, response = await facade.call("POST", CAPTURE, capture)
    assert (status, accepted["status"]) == (202, "capturing")
    assert response.headers["Location"] == f"/v1/payments/{payment_id}"
    # Captured now (the fake pipeline is instant): capturing again answers the payment.
    status, captured, _ = await facade.call("POST", CAPTURE, capture)
    assert (status, captured["status"], captured["paymentResult"]) == (200, "succeeded", True)


async def test_capture_refusals(facade: Facade) -> None:
    facade.world.outcome = PaymentStatus.FAILED
    failed = await _create(facade, "order-cf", "k-cf")
    cases = [
        (f"/v1/payments/{failed['paymentRequestId']}/capture", 409, "payment_not_capturable"),
        (f"/v1/payments/{_PAYMENT_ID}/capture", 404, "not_found"),
        ("/v1/payments/nope/capture", 404, "not_found"),
    ]
    for path, status, code in cases:
        answered, body, _ = await facade.call("POST", CAPTURE, path)
        assert (answered, body["error"]["code"]) == (status, code), path


async def _authorized(facade: Facade, order_id: str) -> str:
    facade.world.outcome = PaymentStatus.AUTHORIZED
    status, created, _ = await facade.call(
        "POST",
        PAYMENTS,
        json={**payment_body(order_id), "capture": False},
        headers={"Idempotency-Key": f"k-{order_id}"},
    )
    assert status == 202
    return str(created["paymentRequestId"])


async def test_a_partial_capture_is_taken_once(facade: Facade) -> None:
    payment_id = await _authorized(facade, "order-partial")
    capture = f"/v1/payments/{payment_id}/capture"
    # Refused before anything is published: above the authorization, more decimals than
    # EUR has, a JSON number, an unknown field.
    for body, status, code in [
        ({"amount": "10.51"}, 409, "capture_exceeds_authorized"),
        ({"amount": "1.001"}, 400, "invalid_amount"),
        ({"amount": 4}, 400, "invalid_amount"),
        ({"amount": "4.00", "currency": "EUR"}, 400, "invalid_request"),
    ]:
        answered, refused, _ = await facade.call("POST", CAPTURE, capture, json=body)
        assert (answered, refused["error"]["code"]) == (status, code), body
    status, read, _ = await facade.call("GET", PAYMENT, f"/v1/payments/{payment_id}")
    assert (read["status"], read["capturedAmount"]) == ("authorized", None)

    status, accepted, _ = await facade.call("POST", CAPTURE, capture, json={"amount": "4.00"})
    assert (status, accepted["status"]) == (202, "capturing")
    status, read, _ = await facade.call("GET", PAYMENT, f"/v1/payments/{payment_id}")
    assert (read["status"], read["amount"], read["capturedAmount"]) == (
        "succeeded",
        "10.50",
        "4.00",
    )
    assert read["refundableAmount"] == "4.00"
    # Captured once: the same amount (or none) answers it, another is a conflict.
    for body in ({"amount": "4"}, None):
        status, again, _ = await facade.call("POST", CAPTURE, capture, json=body)
        assert (status, again["capturedAmount"]) == (200, "4.00")
    status, conflict, _ = await facade.call("POST", CAPTURE, capture, json={"amount": "5.00"})
    assert (status, conflict["error"]["code"]) == (409, "idempotency_conflict")


async def test_cancel_releases_an_authorization(facade: Facade) -> None:
    payment_id = await _authorized(facade, "order-cancel")
    cancel = f"/v1/payments/{payment_id}/cancel"
    status, accepted, response = await facade.call("POST", CANCEL, cancel)
    assert (status, accepted["status"]) == (202, "canceling")
    assert response.headers["Location"] == f"/v1/payments/{payment_id}"
    # Canceled now (the fake pipeline is instant): canceling again answers the payment.
    status, canceled, _ = await facade.call("POST", CANCEL, cancel)
    assert (status, canceled["status"], canceled["paymentResult"]) == (200, "canceled", False)
    status, refused, _ = await facade.call("POST", CAPTURE, f"/v1/payments/{payment_id}/capture")
    assert (status, refused["error"]["code"]) == (409, "payment_not_capturable")


async def test_cancel_refusals(facade: Facade) -> None:
    captured = await _authorized(facade, "order-captured")
    await facade.call("POST", CAPTURE, f"/v1/payments/{captured}/capture")
    cases = [
        (f"/v1/payments/{captured}/cancel", 409, "payment_not_cancelable"),
        (f"/v1/payments/{_PAYMENT_ID}/cancel", 404, "not_found"),
        ("/v1/payments/nope/cancel", 404, "not_found"),
    ]
    for path, status, code in cases:
        answered, body, _ = await facade.call("POST", CANCEL, path)
        assert (answered, body["error"]["code"]) == (status, code), path


@pytest.mark.parametrize(
    ("template", "media_type"),
    [
        ("/healthz", "application/json"),
        ("/readyz", "application/json"),
        ("/openapi.json", "application/json"),
        ("/docs", "text/html"),
        ("/asyncapi.json", "application/json"),
    ],
)
async def test_public_routes_answer_without_a_key(
    facade: Facade, template: str, media_type: str
) -> None:
    status, _, response = await facade.call("GET", template, key=None)
    assert (status, response.content_type) == (200, media_type)


@pytest.mark.parametrize(
    ("file", "status"),
    [("refund_payment.v2.avsc", 200), ("create_payment.v1.avsc", 200), ("nope.v1.avsc", 404)],
)
async def test_the_avro_schema_files_answer_as_documented(
    facade: Facade, file: str, status: int
) -> None:
    answered, _, _ = await facade.call(
        "GET", "/schemas/avro/{file}", f"/schemas/avro/{file}", key=None
    )
    assert answered == status


async def test_readyz_ready_and_not_ready(make_facade: MakeFacade) -> None:
    listener_up = True

    async def result_listener() -> bool:
        return listener_up

    readiness = Readiness()
    readiness.add("result_listener", result_listener)
    facade = await make_facade(readiness=readiness)
    status, body, _ = await facade.call("GET", "/readyz", key=None)
    assert (status, body["checks"]) == (200, {"result_listener": "ok"})
    listener_up = False
    status, body, _ = await facade.call("GET", "/readyz", key=None)
    assert (status, body) == (
        503,
        {"status": "not_ready", "checks": {"result_listener": "failing"}},
    )


# --- webhooks --------------------------------------------------------------------------------

ENDPOINTS = "/v1/webhook_endpoints"
ENDPOINT = "/v1/webhook_endpoints/{endpointId}"
DELIVERIES = "/v1/webhook_endpoints/{endpointId}/deliveries"
RETRY = "/v1/webhook_endpoints/{endpointId}/deliveries/{deliveryId}/retry"
HOOK_URL = "https://hooks.shop.example/paygate"


async def _endpoint(facade: Facade, **body: Any) -> dict[str, Any]:
    sent = {"url": HOOK_URL, "enabledEvents": ["payment.succeeded", "refund.failed"], **body}
    status, created, response = await facade.call("POST", ENDPOINTS, json=sent)
    assert status == 201, created
    assert response.headers["Location"] == f"{ENDPOINTS}/{created['id']}"
    result: dict[str, Any] = created
    return result


async def test_webhook_endpoints_create_list_read_delete(facade: Facade) -> None:
    created = await _endpoint(facade, description="orders service")
    assert created["secret"].startswith("whsec_")
    assert created["enabledEvents"] == ["payment.succeeded", "refund.failed"]
    path = f"{ENDPOINTS}/{created['id']}"
    _, listed, _ = await facade.call("GET", ENDPOINTS)
    assert [e["id"] for e in listed["data"]] == [created["id"]]
    assert "secret" not in listed["data"][0]
    _, read, _ = await facade.call("GET", ENDPOINT, path)
    assert read == {k: v for k, v in created.items() if k != "secret"}
    # Another client sees none of it.
    _, theirs, _ = await facade.call("GET", ENDPOINTS, key=KEY_2)
    assert theirs["data"] == []
    for method, key in (("GET", KEY_2), ("DELETE", KEY_2), ("DELETE", KEY_1), ("GET", KEY_1)):
        status, _, _ = await facade.call(method, ENDPOINT, path, key=key)
        assert status == (200 if (method, key) == ("DELETE", KEY_1) else 404)


async def test_every_event_type_and_all_are_accepted(facade: Facade) -> None:
    created = await _endpoint(facade, enabledEvents=["payment.requires_action", "*"][1:])
    assert created["enabledEvents"] == ["*"]
    for status in PaymentStatus:
        await _endpoint(facade, enabledEvents=[f"payment.{status.value}"])


@pytest.mark.parametrize(
    ("url", "development"),
    [
        ("http://hooks.shop.example/paygate", False),  # not https
        ("https://user:pw@hooks.shop.example/paygate", False),  # credentials
        ("https://intranet.shop.example/in", False),  # one of its addresses is private
        ("https://metadata.shop.example/in", False),  # link-local: cloud metadata
        ("https://169.254.169.254/latest/meta-data", False),
        ("https://10.0.0.1/in", False),
        ("https://192.168.1.20/in", False),
        ("https://[::1]/in", False),
        ("https://[::ffff:10.0.0.1]/in", False),  # IPv4-mapped private
        ("https://[fd00:ec2::254]/in", False),  # unique local (the IPv6 metadata address)
        ("https://100.64.0.1/in", False),  # carrier-grade NAT
        ("https://0.0.0.0/in", False),
        ("https://127.0.0.1/in", False),  # loopback, outside development
        ("https://localhost/in", False),
        ("https://unknown.shop.example/in", False),  # does not resolve
        ("https://xn--a.example/in", False),  # unknown to the resolver
        ("https://[::1/in", False),  # malformed
        ("ftp://hooks.shop.example/in", True),
        ("https://10.0.0.1/in", True),  # development allows loopback only
        ("https://metadata.shop.example/in", True),
    ],
)
async def test_an_endpoint_url_paygate_may_not_reach_is_refused(
    make_facade: MakeFacade, url: str, development: bool
) -> None:
    facade = await make_facade(development=development)
    sent = {"url": url, "enabledEvents": ["payment.succeeded"]}
    status, body, _ = await facade.call("POST", ENDPOINTS, json=sent)
    assert (status, body["error"]["code"], body["error"]["param"]) == (
        400,
        "webhook_url_refused",
        "url",
    )
    assert facade.world.webhooks.endpoints_by_id == {}


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/hooks", "http://localhost:9000/hooks", "https://[::1]/in"]
)
async def test_development_allows_loopback_for_local_receivers(
    make_facade: MakeFacade, url: str
) -> None:
    facade = await make_facade(development=True)
    await _endpoint(facade, url=url)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"url": HOOK_URL, "enabledEvents": ["payment.paid"]}, "enabledEvents"),
        ({"url": HOOK_URL, "enabledEvents": []}, "enabledEvents"),
        ({"url": HOOK_URL}, "enabledEvents"),
        ({"enabledEvents": ["*"]}, "url"),
        ({"url": HOOK_URL, "enabledEvents": ["*"], "secret": "whsec_x"}, "secret"),
        ({"url": "https://hooks.shop.example/\u0000", "enabledEvents": ["*"]}, "url"),
        ({"url": HOOK_URL, "enabledEvents": ["*"], "description": "a\u0007b"}, "description"),
    ],
)
async def test_a_bad_endpoint_body_is_refused(
    facade: Facade, body: dict[str, Any], param: str
) -> None:
    status, answer, _ = await facade.call("POST", ENDPOINTS, json=body)
    text_rule = param in ("url", "description") and "url" in body
    assert (status, answer["error"]["code"], answer["error"]["param"]) == (
        400,
        "invalid_text" if text_rule else "invalid_request",
        param,
    )
    assert facade.world.webhooks.endpoints_by_id == {}


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        # Stored in clear and shown on every read: an account number is refused there.
        (
            {"url": f"{HOOK_URL}?card={SUCCESS_CARD}", "enabledEvents": ["*"]},
            "account_number_in_text",
            "url",
        ),
        (
            {"url": HOOK_URL, "enabledEvents": ["*"], "description": f"card {SUCCESS_CARD}"},
            "account_number_in_text",
            "description",
        ),
        # Percent-encoded in the URL, or an invisible character after every digit.
        (
            {"url": f"{HOOK_URL}/4242%204242%204242%204242", "enabledEvents": ["*"]},
            "account_number_in_text",
            "url",
        ),
        (
            {
                "url": f"{HOOK_URL}?iban=DE89%2D3704%2D0044%2D0532%2D0130%2D00",
                "enabledEvents": ["*"],
            },
            "account_number_in_text",
            "url",
        ),
        (
            {
                "url": HOOK_URL,
                "enabledEvents": ["*"],
                "description": "\u200d".join("4242424242424242"),
            },
            "account_number_in_text",
            "description",
        ),
        # Refused without being repeated: the message names the event by its place.
        (
            {"url": HOOK_URL, "enabledEvents": ["*", SUCCESS_CARD]},
            "invalid_request",
            "enabledEvents",
        ),
        # urlsplit's own message quotes the port it could not read.
        (
            {"url": "https://hooks.shop.example:x4242/in", "enabledEvents": ["*"]},
            "webhook_url_refused",
            "url",
        ),
    ],
)
async def test_an_endpoint_body_holding_a_number_is_refused_without_echoing_it(
    facade: Facade, body: dict[str, Any], code: str, param: str
) -> None:
    status, answer, _ = await facade.call("POST", ENDPOINTS, json=body)
    assert (status, answer["error"]["code"], answer["error"]["param"]) == (400, code, param)
    assert "4242" not in answer["error"]["message"]
    assert facade.world.webhooks.endpoints_by_id == {}


async def test_deliveries_are_listed_and_sent_again(facade: Facade) -> None:
    created = await _endpoint(facade)
    failed = facade.world.webhooks.deliver(created["id"], "payment.succeeded")
    path = f"{ENDPOINTS}/{created['id']}/deliveries"
    _, listed, _ = await facade.call("GET", DELIVERIES, path)
    [only] = listed["data"]
    assert (only["id"], only["status"], only["lastResponseCode"]) == (failed.id, "failed", 500)
    _, none_pending, _ = await facade.call("GET", DELIVERIES, path + "?status=pending")
    assert none_pending["data"] == []
    for query in ("?status=lost", "?limit=0", "?limit=x"):
        status, refused, _ = await facade.call("GET", DELIVERIES, path + query)
        assert (status, refused["error"]["code"]) == (400, "invalid_request")

    retry = f"{path}/{failed.id}/retry"
    status, _, _ = await facade.call("POST", RETRY, retry, key=KEY_2)
    assert status == 404
    status, again, _ = await facade.call("POST", RETRY, retry)
    assert (status, again["status"], again["eventId"]) == (202, "pending", failed.event_id)
    status, _, _ = await facade.call("POST", RETRY, f"{path}/whd_unknown/retry")
    assert status == 404
