"""The facade's HTTP behaviour against hand-written fakes of its three ports.

Plain HTTP through aiohttp's test server: what is tested here is the application (validation,
status codes, bodies, headers, metrics, logs), not TLS, which the integration tests cover.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from multidict import CIMultiDictProxy
from prometheus_client import CollectorRegistry

from domain.accounts import Account, AccountRef, AccountType
from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from domain.error_info import ErrorInfo
from domain.errors import CATALOGUE, ErrorCode, PaygateError
from domain.idempotency import OrderPayment
from domain.money import Money
from domain.payment_view import PaymentView
from domain.payments import CreatePayment, PaymentMethod, payment_request_id_for
from domain.refund_view import RefundView
from domain.refunds import RefundPayment
from domain.status import PaymentStatus
from domain.vaulted import VaultedAccount
from http_facade.app import build_app
from http_facade.rate_limit import TokenBuckets
from http_facade.requests import parse_create_payment_body
from http_facade.security_headers import SECURITY_HEADERS
from schemas.codec import CREATE_PAYMENT, AvroCodec
from schemas.payments import PaymentMessages
from schemas.registry import FileSchemaRegistry
from telemetry.metrics import Metrics
from tests.support.app_client import started_client
from tests.support.builders import SUCCESS_CARD, create_payment_record
from tests.support.fake_vault_rows import FakeVaultRows
from tests.support.memory_vault import memory_vault
from tests.support.result_watch import WatchByWaiting, watch_by_waiting
from vault.vault import Vault

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
PAYEE = "acct_merchant_0001"
ERROR_KEYS = {"code", "message", "category", "retryable"}
ACCOUNT_KEY = b"facade-test-key"
API_KEY = "pgk_0123456789abcdef_" + "a" * 64
CLIENT = "client-1"
AVRO = AvroCodec(FileSchemaRegistry.bundled())


class FakeAuthenticator:
    """Knows one key; the real store is tested against SQLite and PostgreSQL."""

    async def authenticate(self, api_key: str) -> str | None:
        return CLIENT if api_key == API_KEY else None


def no_rate_limit() -> TokenBuckets:
    # These tests are about validation; a burst no test reaches keeps the limit out of it.
    return TokenBuckets(rate_per_s=1000.0, burst=1_000_000)


class FakePublisher:
    """Records commands; with ``completes`` set, the payment appears there as succeeded,
    the way the real pipeline would make it appear a moment later."""

    def __init__(self) -> None:
        self.published: list[CreatePayment] = []
        self.refunds_published: list[RefundPayment] = []
        self.captures_published: list[CapturePayment] = []
        self.cancels_published: list[CancelPayment] = []
        self.completes: FakeQueries | None = None
        # The hash of the parameters the completed payment was made with (the facade
        # answers a wait with a payment of other parameters as a key conflict).
        self.completes_with: str | None = None

    async def publish_refund(self, command: RefundPayment) -> None:
        self.refunds_published.append(command)

    async def publish_capture(self, command: CapturePayment) -> None:
        self.captures_published.append(command)

    async def publish_cancel(self, command: CancelPayment) -> None:
        self.cancels_published.append(command)

    async def publish_create_payment(self, command: CreatePayment) -> None:
        self.published.append(command)
        if self.completes is not None:
            made_with = (
                {} if self.completes_with is None else {"parameters_hash": self.completes_with}
            )
            self.completes.payments[command.payment_request_id] = stored_view(
                command.payment_request_id,
                order_id=command.order_id,
                idempotency_key=command.idempotency_key,
                **made_with,
            )


class FailingPublisher(FakePublisher):
    async def publish_create_payment(self, command: CreatePayment) -> None:
        # A number in an exception's text (a driver may quote what it was given): the
        # facade publishes tokens now, but the answer must not echo any text of this.
        raise RuntimeError(f"broker said no to {SUCCESS_CARD} at /internal/path")


class FakeQueries:
    def __init__(self) -> None:
        self.payments: dict[str, PaymentView] = {}
        self.expired_keys: set[str] = set()  # payment ids whose idempotency key expired
        self.asked: list[str] = []

    async def get_payment(self, payment_request_id: str) -> PaymentView | None:
        self.asked.append(payment_request_id)
        return self.payments.get(payment_request_id)

    async def payment_with_refunds(
        self, payment_request_id: str
    ) -> tuple[PaymentView, list[RefundView]] | None:
        view = await self.get_payment(payment_request_id)
        return None if view is None else (view, [])  # FakeRefunds holds none

    async def client_order_page(
        self, client_id: str, order_id: str, *, limit: int, starting_after: str | None
    ) -> list[PaymentView]:
        mine = [
            p for p in self.payments.values() if p.client_id == client_id and p.order_id == order_id
        ]
        ids = [p.payment_request_id for p in mine]
        start = ids.index(starting_after) + 1 if starting_after in ids else 0
        return mine[start : start + limit]

    async def order_payments(
        self, order_id: str, client_id: str | None = None
    ) -> list[OrderPayment]:
        # Per-client scoping is the store's; these fakes hold one client's payments.
        return [
            OrderPayment(
                p.payment_request_id,
                p.idempotency_key,
                p.status,
                key_expired=p.payment_request_id in self.expired_keys,
            )
            for p in self.payments.values()
            if p.order_id == order_id
        ]


class FakeRefunds:
    """No refunds: these tests are about payments."""

    async def get(self, refund_id: str) -> RefundView | None:
        return None

    async def of_payments(self, payment_request_ids: Sequence[str]) -> dict[str, list[RefundView]]:
        return {pid: [] for pid in payment_request_ids}


class FakeWaiter:
    def __init__(self, final: bool = True) -> None:
        self.final = final
        self.calls: list[tuple[str, float]] = []

    async def wait_for_final(
        self, payment_request_id: str, timeout_s: float, *, refusal_event_id: str | None = None
    ) -> bool:
        self.calls.append((payment_request_id, timeout_s))
        return self.final

    def watch(
        self, payment_request_id: str, *, refusal_event_id: str | None = None
    ) -> contextlib.nullcontext[WatchByWaiting]:
        return watch_by_waiting(self.wait_for_final, payment_request_id)


class Facade:
    """The app under test, its fakes, and a client talking to it."""

    def __init__(self, client: TestClient[Any, Any], **fakes: Any) -> None:
        self.client = client
        self.publisher: FakePublisher = fakes["publisher"]
        self.queries: FakeQueries = fakes["queries"]
        self.waiter: FakeWaiter = fakes["waiter"]
        self.metrics: Metrics = fakes["metrics"]


MakeFacade = Callable[..., Awaitable[Facade]]


@pytest.fixture
async def make_facade() -> AsyncIterator[MakeFacade]:
    clients: list[TestClient[Any, Any]] = []

    async def make(
        *,
        publisher: FakePublisher | None = None,
        waiter: FakeWaiter | None = None,
        max_wait_s: float = 30.0,
        vault: Vault | None = None,
    ) -> Facade:
        fakes: dict[str, Any] = {
            "publisher": publisher or FakePublisher(),
            "queries": FakeQueries(),
            "waiter": waiter or FakeWaiter(),
            "metrics": Metrics(CollectorRegistry()),
        }
        app = build_app(
            **fakes,
            refunds=FakeRefunds(),
            account_key=ACCOUNT_KEY,
            vault=vault or memory_vault(ACCOUNT_KEY),
            authenticator=FakeAuthenticator(),
            rate_limiter=no_rate_limit(),
            max_wait_s=max_wait_s,
            clock=lambda: NOW,
        )
        # Every request of these tests carries the key, as a real client's would.
        client = await started_client(app, {"Authorization": f"Bearer {API_KEY}"})
        clients.append(client)
        return Facade(client, **fakes)

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def facade(make_facade: MakeFacade) -> Facade:
    return await make_facade()


def valid_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "userId": "user-1",
        "orderId": "order-1",
        "amount": "10.50",
        "currency": "USD",
        "paymentMethod": "card",
        "payerAccount": {"type": "card", "number": SUCCESS_CARD, "holderName": "Ada Lovelace"},
        "payeeAccount": {"type": "bank_account", "number": PAYEE},
        "metadata": {"cart": "42"},
    }
    body.update(changes)
    return body


def stored_view(payment_request_id: str, **changes: Any) -> PaymentView:
    fields: dict[str, Any] = {
        "payment_request_id": payment_request_id,
        "order_id": "order-1",
        "user_id": "user-1",
        "idempotency_key": "key-1",
        "status": PaymentStatus.SUCCEEDED,
        "amount": Money(1050, "USD"),
        "payment_method": PaymentMethod.CARD,
        "payer": AccountRef(AccountType.CARD, "****4242", "f" * 64),
        "payee": AccountRef(AccountType.BANK_ACCOUNT, "****0001", "e" * 64),
        "provider": "sandbox",
        "provider_reference": "sb_123",
        "error": None,
        "created_at": NOW,
        "updated_at": NOW,
        "client_id": CLIENT,
    }
    fields.update(changes)
    return PaymentView(**fields)


async def post_payment(
    facade: Facade, body: Any = None, *, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], CIMultiDictProxy[str]]:
    data = json.dumps(valid_body() if body is None else body)
    sent = {"Content-Type": "application/json", **(headers or {})}
    response = await facade.client.post("/v1/payments", data=data, headers=sent)
    return response.status, await response.json(), response.headers


async def post_raw(
    facade: Facade, data: bytes | str, content_type: str = "application/json"
) -> tuple[int, dict[str, Any]]:
    response = await facade.client.post(
        "/v1/payments", data=data, headers={"Content-Type": content_type}
    )
    return response.status, await response.json()


def assert_error(
    status: int, body: dict[str, Any], code: ErrorCode, param: str | None = None
) -> dict[str, Any]:
    """The catalogue body, with the code's own HTTP status, category and retryable."""
    spec = CATALOGUE[code]
    assert status == spec.http_status, body
    error: dict[str, Any] = body["error"]
    assert set(body) == {"error"}
    assert ERROR_KEYS <= set(error) <= ERROR_KEYS | {"param", "decline_code"}
    assert error["code"] == code.value
    assert error["category"] == spec.category.value
    assert error["retryable"] is spec.retryable
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error.get("param") == param
    assert SUCCESS_CARD not in json.dumps(body)
    return error


# --- bad input: a catalogue error, and nothing published ---------------------------------


async def test_malformed_json_is_invalid_request(facade: Facade) -> None:
    status, body = await post_raw(facade, b'{"userId": "user-1",')
    assert_error(status, body, ErrorCode.INVALID_REQUEST, param=None)
    assert facade.publisher.published == []


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(b'{"amount": NaN}', id="nan"),
        pytest.param(b"[" * 20000 + b"]" * 20000, id="deeply-nested"),
        pytest.param(b"", id="empty"),
    ],
)
async def test_unreadable_bodies_are_invalid_request(facade: Facade, raw: bytes) -> None:
    status, body = await post_raw(facade, raw)
    assert_error(status, body, ErrorCode.INVALID_REQUEST, param=None)
    assert facade.publisher.published == []


async def test_duplicate_keys_are_refused(facade: Facade) -> None:
    text = json.dumps(valid_body())[:-1] + ', "amount": "1000.00"}'
    status, body = await post_raw(facade, text)
    assert_error(status, body, ErrorCode.INVALID_REQUEST, param=None)
    assert facade.publisher.published == []


@pytest.mark.parametrize("document", [[], "a string", 42, None, True])
async def test_body_that_is_not_an_object_is_invalid_request(facade: Facade, document: Any) -> None:
    status, body = await post_raw(facade, json.dumps(document))
    error = assert_error(status, body, ErrorCode.INVALID_REQUEST, param=None)
    assert "object" in error["message"]
    assert facade.publisher.published == []


def _without(path: str) -> dict[str, Any]:
    body = valid_body()
    *parents, leaf = path.split(".")
    target = body
    for name in parents:
        target = target[name]
    del target[leaf]
    return body


@pytest.mark.parametrize(
    "missing",
    [
        "userId",
        "orderId",
        "amount",
        "currency",
        "paymentMethod",
        "payerAccount",
        "payeeAccount",
        "payeeAccount.type",
    ],
)
async def test_missing_field_names_its_path(facade: Facade, missing: str) -> None:
    status, body, _ = await post_payment(facade, _without(missing))
    assert_error(status, body, ErrorCode.INVALID_REQUEST, param=missing)
    assert facade.publisher.published == []


async def test_an_account_needs_a_number_or_a_token(facade: Facade) -> None:
    status, body, _ = await post_payment(facade, _without("payerAccount.number"))
    assert_error(status, body, ErrorCode.INVALID_REQUEST, param="payerAccount")
    assert "exactly one of number and token" in body["error"]["message"]
    assert facade.publisher.published == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (valid_body(extra="x"), "extra"),
        (valid_body(user_id="user-1"), "user_id"),
        (
            valid_body(payerAccount={"type": "card", "number": SUCCESS_CARD, "cvc": "123"}),
            "payerAccount.cvc",
        ),
    ],
)
async def test_unknown_field_is_refused(facade: Facade, body: dict[str, Any], param: str) -> None:
    status, answer, _ = await post_payment(facade, body)
    assert_error(status, answer, ErrorCode.INVALID_REQUEST, param=param)
    assert facade.publisher.published == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (valid_body(userId=7), "userId"),
        (valid_body(paymentMethod=["card"]), "paymentMethod"),
        (
            valid_body(payerAccount={"type": "card", "number": int(SUCCESS_CARD)}),
            "payerAccount.number",
        ),
        (valid_body(payeeAccount="acct_merchant_0001"), "payeeAccount"),
        (valid_body(metadata={"cart": 42}), "metadata.cart"),
        (valid_body(metadata=["cart"]), "metadata"),
    ],
)
async def test_ill_typed_field_is_refused(facade: Facade, body: dict[str, Any], param: str) -> None:
    status, answer, _ = await post_payment(facade, body)
    error = assert_error(status, answer, ErrorCode.INVALID_REQUEST, param=param)
    assert SUCCESS_CARD not in error["message"]
    assert facade.publisher.published == []


# A name the client chose (an unknown field, a metadata key) in which an account number
# hides, written any way: the refusal's param and message never repeat it.
_FULL_WIDTH_CARD = SUCCESS_CARD.translate({ord(d): ord(d) + 0xFEE0 for d in "0123456789"})
NAMES_HOLDING_A_NUMBER: dict[str, tuple[dict[str, Any], str, str]] = {
    "unknown-field": (valid_body(**{SUCCESS_CARD: "x"}), "", SUCCESS_CARD),
    "unknown-account-field": (
        valid_body(payerAccount={"type": "card", "number": "acct_1", SUCCESS_CARD: "x"}),
        "payerAccount",
        SUCCESS_CARD,
    ),
    "metadata-key-ill-typed-value": (
        valid_body(metadata={SUCCESS_CARD: 7}),
        "metadata",
        SUCCESS_CARD,
    ),
    "metadata-key-dotted": (
        valid_body(metadata={"4242.4242.4242.4242": 7}),
        "metadata",
        "4242.4242.4242.4242",
    ),
    "metadata-key-full-width": (
        valid_body(metadata={_FULL_WIDTH_CARD: 7}),
        "metadata",
        _FULL_WIDTH_CARD,
    ),
}


@pytest.mark.parametrize(
    ("body", "param", "number"), NAMES_HOLDING_A_NUMBER.values(), ids=NAMES_HOLDING_A_NUMBER
)
async def test_a_refusal_never_echoes_a_name_that_holds_a_number(
    facade: Facade, body: dict[str, Any], param: str, number: str
) -> None:
    status, answer, _ = await post_payment(facade, body)
    assert_error(status, answer, ErrorCode.INVALID_REQUEST, param=param or None)
    assert number not in json.dumps(answer, ensure_ascii=False)
    assert facade.publisher.published == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (valid_body(userId="user 1"), "userId"),
        (valid_body(paymentMethod="cash"), "paymentMethod"),
        (valid_body(payerAccount={"type": "card", "number": "42"}), "payerAccount.number"),
        (valid_body(payerAccount={"type": "cheque", "number": SUCCESS_CARD}), "payerAccount.type"),
    ],
)
async def test_values_the_domain_refuses(facade: Facade, body: dict[str, Any], param: str) -> None:
    status, answer, _ = await post_payment(facade, body)
    assert_error(status, answer, ErrorCode.INVALID_REQUEST, param=param)
    assert facade.publisher.published == []


# The same text, refused on both intakes with the same code: the REST body here, the Avro
# record built from it by the codec (the consumer dead-letters it with that code).
BAD_TEXT: dict[str, tuple[dict[str, Any], ErrorCode, str]] = {
    "user-id-nul": (valid_body(userId="user\x001"), ErrorCode.INVALID_TEXT, "userId"),
    "order-id-nul": (valid_body(orderId="order\x00"), ErrorCode.INVALID_TEXT, "orderId"),
    # Amount and currency keep one code per field, whatever is wrong with them.
    "currency-nul": (valid_body(currency="US\x00"), ErrorCode.UNSUPPORTED_CURRENCY, "currency"),
    "method-c1": (valid_body(paymentMethod="card\x9b"), ErrorCode.INVALID_TEXT, "paymentMethod"),
    "number-nul": (
        valid_body(payerAccount={"type": "card", "number": SUCCESS_CARD + "\x00"}),
        ErrorCode.INVALID_TEXT,
        "payerAccount.number",
    ),
    "holder-name-newline": (
        valid_body(payerAccount={"type": "card", "number": SUCCESS_CARD, "holderName": "Ada\r\nL"}),
        ErrorCode.INVALID_TEXT,
        "payerAccount.holderName",
    ),
    "metadata-value-nul": (
        valid_body(metadata={"cart": "4\x002"}),
        ErrorCode.INVALID_TEXT,
        "metadata.cart",
    ),
    "metadata-value-noncharacter": (
        valid_body(metadata={"cart": "\ufdd0"}),
        ErrorCode.INVALID_TEXT,
        "metadata.cart",
    ),
    "metadata-key-tab": (
        valid_body(metadata={"ca\trt": "42"}),
        ErrorCode.INVALID_TEXT,
        "metadata",
    ),
    "metadata-value-too-long": (
        valid_body(metadata={"cart": "x" * 501}),
        ErrorCode.INVALID_REQUEST,
        "metadata.cart",
    ),
    "holder-name-too-long": (
        valid_body(payerAccount={"type": "card", "number": SUCCESS_CARD, "holderName": "A" * 141}),
        ErrorCode.INVALID_REQUEST,
        "payerAccount.holderName",
    ),
    # Free text that holds an account number would be stored and published in clear.
    "metadata-value-card": (
        valid_body(metadata={"cart": "42", "note": f"card {SUCCESS_CARD}"}),
        ErrorCode.ACCOUNT_NUMBER_IN_TEXT,
        "metadata.note",
    ),
    "metadata-value-dotted-card": (
        valid_body(metadata={"note": "4242.4242.4242.4242"}),
        ErrorCode.ACCOUNT_NUMBER_IN_TEXT,
        "metadata.note",
    ),
    "metadata-value-no-break-spaced-card": (
        valid_body(metadata={"note": "4242\u00a04242\u00a04242\u00a04242"}),
        ErrorCode.ACCOUNT_NUMBER_IN_TEXT,
        "metadata.note",
    ),
    "metadata-value-full-width-card": (
        valid_body(metadata={"note": _FULL_WIDTH_CARD}),
        ErrorCode.ACCOUNT_NUMBER_IN_TEXT,
        "metadata.note",
    ),
    "metadata-value-grouped-iban": (
        valid_body(metadata={"note": "DE89 3704 0044 0532 0130 00"}),
        ErrorCode.ACCOUNT_NUMBER_IN_TEXT,
        "metadata.note",
    ),
    # The holder name travels in clear beside the vaulted number.
    "holder-name-card": (
        valid_body(
            payerAccount={"type": "card", "number": SUCCESS_CARD, "holderName": SUCCESS_CARD}
        ),
        ErrorCode.ACCOUNT_NUMBER_IN_TEXT,
        "payerAccount.holderName",
    ),
    "holder-name-grouped-iban": (
        valid_body(
            payeeAccount={
                "type": "iban",
                "number": "acct_1",
                "holderName": "DE89 3704 0044 0532 0130 00",
            }
        ),
        ErrorCode.ACCOUNT_NUMBER_IN_TEXT,
        "payeeAccount.holderName",
    ),
    # Written so the old detector did not read it: invisible characters between every
    # digit, percent-encoded, an IBAN with other separators or in small letters.
    "metadata-value-zero-width-card": (
        valid_body(metadata={"note": "\u200b".join("4242424242424242")}),
        ErrorCode.ACCOUNT_NUMBER_IN_TEXT,
        "metadata.note",
    ),
    "metadata-value-percent-encoded-card": (
        valid_body(metadata={"link": "https://shop.example/c/4242%204242%204242%204242"}),
        ErrorCode.ACCOUNT_NUMBER_IN_TEXT,
        "metadata.link",
    ),
    "metadata-value-dashed-iban": (
        valid_body(metadata={"note": "DE89-3704-0044-0532-0130-00"}),
        ErrorCode.ACCOUNT_NUMBER_IN_TEXT,
        "metadata.note",
    ),
    "metadata-value-small-letter-iban": (
        valid_body(metadata={"note": "de89 3704 0044 0532 0130 00"}),
        ErrorCode.ACCOUNT_NUMBER_IN_TEXT,
        "metadata.note",
    ),
    "holder-name-soft-hyphen-card": (
        valid_body(
            payerAccount={
                "type": "card",
                "number": SUCCESS_CARD,
                "holderName": "\u00ad".join("4242424242424242"),
            }
        ),
        ErrorCode.ACCOUNT_NUMBER_IN_TEXT,
        "payerAccount.holderName",
    ),
    "metadata-key-word-joined-card": (
        valid_body(metadata={"\u2060".join("4242424242424242"): "x"}),
        ErrorCode.ACCOUNT_NUMBER_IN_TEXT,
        "metadata",
    ),
    # The key is never named in the param: it is the number.
    "metadata-key-card": (
        valid_body(metadata={"4242-4242-4242-4242": "x"}),
        ErrorCode.ACCOUNT_NUMBER_IN_TEXT,
        "metadata",
    ),
}


def _avro_refusal(body: dict[str, Any]) -> PaygateError:
    """What the Kafka intake says of the same values as an Avro CreatePayment."""
    record = create_payment_record(
        **{k: v for k, v in body.items() if k not in ("amount", "payerAccount", "payeeAccount")},
        amount=Decimal(body["amount"]),
        payerAccount={"holderName": None, **body["payerAccount"]},
        payeeAccount={"holderName": None, **body["payeeAccount"]},
    )
    with pytest.raises(PaygateError) as refused:
        PaymentMessages.bundled().decode_any_command(AVRO.encode(CREATE_PAYMENT, record))
    return refused.value


@pytest.mark.parametrize(("body", "code", "param"), BAD_TEXT.values(), ids=BAD_TEXT)
async def test_bad_text_is_refused_as_the_kafka_intake_refuses_it(
    facade: Facade, body: dict[str, Any], code: ErrorCode, param: str
) -> None:
    status, answer, _ = await post_payment(facade, body)
    error = assert_error(status, answer, code, param=param)
    assert facade.publisher.published == []
    kafka = _avro_refusal(body)
    assert (kafka.code, kafka.param) == (code, param)
    assert kafka.message == error["message"]


async def test_an_account_number_in_metadata_is_refused_and_changes_nothing(
    make_facade: MakeFacade,
) -> None:
    rows = FakeVaultRows()
    facade = await make_facade(vault=memory_vault(ACCOUNT_KEY, rows))
    body = valid_body(metadata={"note": f"paid with {SUCCESS_CARD}"})
    status, answer, _ = await post_payment(facade, body)
    error = assert_error(status, answer, ErrorCode.ACCOUNT_NUMBER_IN_TEXT, param="metadata.note")
    assert error["retryable"] is False
    assert SUCCESS_CARD not in json.dumps(answer)
    # Nothing published, and the payer's number (valid) was not vaulted either.
    assert facade.publisher.published == []
    assert rows.entries == {}
    # The same request without the note vaults its numbers: the vault above was the one used.
    status, _, _ = await post_payment(facade, valid_body(metadata={"note": "paid"}))
    assert status == 202
    assert rows.entries != {}


ALIPAY_LIMIT_MESSAGE = (
    "amount must be at most 100000000.00 CNY for paymentMethod alipay "
    "(the provider's limit for one payment)"
)


async def test_an_alipay_amount_above_alipays_limit_is_refused_and_changes_nothing(
    make_facade: MakeFacade,
) -> None:
    """Alipay opens no trade above 100,000,000.00 yuan (ACQ.TOTAL_FEE_EXCEED): refused at
    intake, 400 invalid_amount with a stable message, nothing vaulted or published; the
    Kafka intake refuses the same values with the same error (it dead-letters them)."""
    rows = FakeVaultRows()
    facade = await make_facade(vault=memory_vault(ACCOUNT_KEY, rows))
    body = valid_body(amount="100000000.01", currency="CNY", paymentMethod="alipay")
    status, answer, _ = await post_payment(facade, body)
    error = assert_error(status, answer, ErrorCode.INVALID_AMOUNT, param="amount")
    assert error["message"] == ALIPAY_LIMIT_MESSAGE
    assert facade.publisher.published == []
    assert rows.entries == {}
    kafka = _avro_refusal(body)
    assert (kafka.code, kafka.param, kafka.message) == (
        ErrorCode.INVALID_AMOUNT,
        "amount",
        ALIPAY_LIMIT_MESSAGE,
    )
    # At the limit, and above it by another method, the request is taken.
    at_limit = valid_body(amount="100000000.00", currency="CNY", paymentMethod="alipay")
    assert (await post_payment(facade, at_limit))[0] == 202
    by_card = valid_body(amount="100000000.01", currency="CNY", orderId="order-2")
    assert (await post_payment(facade, by_card))[0] == 202


async def test_ordinary_ids_in_metadata_are_accepted(facade: Facade) -> None:
    ids = {
        "orderRef": "1796538959715",  # 13 digits, not Luhn-valid
        "createdAtMs": "1765062000002",  # a millisecond timestamp that passes the Luhn check
        "snowflake": "1541815603606036480",
        "trace": "550e8400-e29b-41d4-a716-424242424242",  # a UUID whose last group passes Luhn
        "paymentRef": "pay_0123456789abcdef0123456789abcdef",
        "masked": "****4242",
        # Read through encodings and invisible characters, ids are still ids.
        "link": "https://shop.example/orders?id=1796538959715&at=1765062000002%20ms",
        "joined": "order\u200b-1796538959715",
        "words": "de89 is no iban",
    }
    status, _, _ = await post_payment(facade, valid_body(metadata=ids))
    assert status == 202
    assert dict(facade.publisher.published[0].metadata) == ids


@pytest.mark.parametrize(
    ("text", "param"),
    [
        ('"cart": "\\ud800"', "metadata.cart"),  # a lone surrogate, as JSON can escape one
        ('"cart": "\\udc00x"', "metadata.cart"),
        ('"\\ud800": "42"', "metadata"),
    ],
)
async def test_a_lone_surrogate_is_invalid_text_and_never_reaches_the_publisher(
    facade: Facade, text: str, param: str
) -> None:
    raw = json.dumps(valid_body(metadata={"PLACE": "HOLDER"})).replace('"PLACE": "HOLDER"', text)
    status, body = await post_raw(facade, raw)
    assert_error(status, body, ErrorCode.INVALID_TEXT, param=param)
    assert facade.publisher.published == []


async def test_an_ill_typed_value_under_a_bad_key_does_not_echo_the_key(facade: Facade) -> None:
    status, body, _ = await post_payment(facade, valid_body(metadata={"ca\x00rt": 42}))
    assert_error(status, body, ErrorCode.INVALID_REQUEST, param="metadata")
    assert "\x00" not in json.dumps(body, ensure_ascii=False)


async def test_invalid_account_number_is_not_echoed(facade: Facade) -> None:
    secret = "4000-0000-0000-0002"  # refused (dashes), and must not come back
    body = valid_body(payerAccount={"type": "card", "number": secret})
    status, answer, _ = await post_payment(facade, body)
    error = assert_error(status, answer, ErrorCode.INVALID_REQUEST, param="payerAccount.number")
    assert secret not in json.dumps(answer)
    assert "0002" not in error["message"]
    assert facade.publisher.published == []


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        ("0", "USD"),
        ("0.00", "USD"),
        ("-1.00", "USD"),
        ("10.001", "USD"),
        ("1.5", "JPY"),
        ("1.2345", "BHD"),
        ("1e2", "USD"),
        ("", "USD"),
        (" 10.50", "USD"),
        ("10,50", "USD"),
    ],
)
async def test_bad_amount_text_is_invalid_amount(
    facade: Facade, amount: str, currency: str
) -> None:
    status, body, _ = await post_payment(facade, valid_body(amount=amount, currency=currency))
    assert_error(status, body, ErrorCode.INVALID_AMOUNT, param="amount")
    assert facade.publisher.published == []


@pytest.mark.parametrize("number", ["0.1", "1e2", "19.999999999999999", "1050", "10.50"])
async def test_amount_as_json_number_is_invalid_amount(facade: Facade, number: str) -> None:
    # Written into the JSON text by hand: a number must be refused however exact it looks.
    text = json.dumps(valid_body(amount="PLACEHOLDER")).replace('"PLACEHOLDER"', number)
    status, body = await post_raw(facade, text)
    assert_error(status, body, ErrorCode.INVALID_AMOUNT, param="amount")
    assert facade.publisher.published == []


@pytest.mark.parametrize("currency", ["XYZ", "usd", "US", "XAU", ""])
async def test_unknown_currency_is_unsupported_currency(facade: Facade, currency: str) -> None:
    status, body, _ = await post_payment(facade, valid_body(currency=currency))
    assert_error(status, body, ErrorCode.UNSUPPORTED_CURRENCY, param="currency")
    assert facade.publisher.published == []


async def test_currency_as_number_is_unsupported_currency(facade: Facade) -> None:
    status, body, _ = await post_payment(facade, valid_body(currency=840))
    assert_error(status, body, ErrorCode.UNSUPPORTED_CURRENCY, param="currency")
    assert facade.publisher.published == []


async def test_body_over_64_kib_is_request_too_large(facade: Facade) -> None:
    body = valid_body(metadata={"filler": "x" * (64 * 1024)})
    status, answer, _ = await post_payment(facade, body)
    assert_error(status, answer, ErrorCode.REQUEST_TOO_LARGE, param=None)
    assert facade.publisher.published == []


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
async def test_wrong_content_type_is_unsupported_media_type(
    facade: Facade, content_type: str
) -> None:
    status, body = await post_raw(facade, json.dumps(valid_body()), content_type=content_type)
    assert_error(status, body, ErrorCode.UNSUPPORTED_MEDIA_TYPE, param="Content-Type")
    assert facade.publisher.published == []


async def test_missing_content_type_is_unsupported_media_type(facade: Facade) -> None:
    response = await facade.client.post("/v1/payments", data=json.dumps(valid_body()).encode())
    assert_error(
        response.status, await response.json(), ErrorCode.UNSUPPORTED_MEDIA_TYPE, "Content-Type"
    )
    assert facade.publisher.published == []


@pytest.mark.parametrize("key", ["has space", "x" * 256, "caf\u00e9"])
async def test_bad_idempotency_key_is_refused(facade: Facade, key: str) -> None:
    response = await facade.client.post(
        "/v1/payments",
        data=json.dumps(valid_body()),
        headers={"Content-Type": "application/json", "Idempotency-Key": key},
    )
    assert_error(
        response.status, await response.json(), ErrorCode.INVALID_REQUEST, "Idempotency-Key"
    )
    assert facade.publisher.published == []


@pytest.mark.parametrize("prefer", ["wait=abc", "wait=0", "wait=-1", "wait=1.5", "wait"])
async def test_malformed_prefer_wait_is_refused(facade: Facade, prefer: str) -> None:
    status, body, _ = await post_payment(facade, headers={"Prefer": prefer})
    assert_error(status, body, ErrorCode.INVALID_REQUEST, param="Prefer")
    assert facade.publisher.published == []
    assert facade.waiter.calls == []


@pytest.mark.parametrize(
    "path",
    [
        "/v1/payments/pay_00000000000000000000000000000000",
        "/v1/payments/not-an-id",
        f"/v1/payments/{SUCCESS_CARD}",
    ],
)
async def test_unknown_payment_is_not_found(facade: Facade, path: str) -> None:
    response = await facade.client.get(path)
    assert_error(response.status, await response.json(), ErrorCode.NOT_FOUND)


async def test_malformed_id_is_not_even_queried(facade: Facade) -> None:
    await facade.client.get(f"/v1/payments/{SUCCESS_CARD}")
    assert facade.queries.asked == []


async def test_unknown_route_is_not_found(facade: Facade) -> None:
    response = await facade.client.get("/v2/nothing")
    assert_error(response.status, await response.json(), ErrorCode.NOT_FOUND)


async def test_wrong_method_is_method_not_allowed(facade: Facade) -> None:
    response = await facade.client.delete("/v1/payments")
    assert_error(response.status, await response.json(), ErrorCode.METHOD_NOT_ALLOWED)
    assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}


async def test_unexpected_failure_is_a_generic_internal_error(
    make_facade: MakeFacade, caplog: pytest.LogCaptureFixture
) -> None:
    facade = await make_facade(publisher=FailingPublisher())
    with caplog.at_level(logging.INFO, logger="paygate.http"):
        status, body, _ = await post_payment(facade)
    error = assert_error(status, body, ErrorCode.INTERNAL_ERROR)
    assert "broker" not in error["message"]
    assert "/internal/path" not in json.dumps(body)
    logged = [r for r in caplog.records if r.exc_info is not None]
    assert len(logged) == 1
    assert isinstance(logged[0].exc_info[1], RuntimeError)  # type: ignore[index]


# --- happy paths -------------------------------------------------------------------------


async def test_create_answers_202_with_the_deterministic_id(facade: Facade) -> None:
    status, body, headers = await post_payment(facade, headers={"Idempotency-Key": "key-1"})
    expected_id = payment_request_id_for("order-1", "key-1", client_id=CLIENT)
    assert status == 202
    assert body == {
        "paymentRequestId": expected_id,
        "status": "pending",
        "paymentResult": False,
        "error": None,
    }
    assert headers["Location"] == f"/v1/payments/{expected_id}"
    assert "Preference-Applied" not in headers
    assert facade.waiter.calls == []
    [command] = facade.publisher.published
    assert command.payment_request_id == expected_id
    assert command.idempotency_key == "key-1"
    assert command.user_id == "user-1"
    assert command.order_id == "order-1"
    # The facade published a token, never the number; it is the number the client sent.
    assert isinstance(command.payer, VaultedAccount)
    assert command.payer.ref(ACCOUNT_KEY) == Account(AccountType.CARD, SUCCESS_CARD).ref(
        ACCOUNT_KEY
    )
    assert command.payer.holder_name == "Ada Lovelace"
    assert command.payee.type is AccountType.BANK_ACCOUNT
    assert command.payment_method is PaymentMethod.CARD
    assert command.requested_at == NOW
    assert dict(command.metadata) == {"cart": "42"}


async def test_same_key_gives_the_same_id(facade: Facade) -> None:
    first = await post_payment(facade, headers={"Idempotency-Key": "key-1"})
    second = await post_payment(facade, headers={"Idempotency-Key": "key-1"})
    assert first[1]["paymentRequestId"] == second[1]["paymentRequestId"]


async def test_without_idempotency_key_every_call_is_a_new_payment(facade: Facade) -> None:
    first = await post_payment(facade)
    second = await post_payment(facade)
    assert first[0] == second[0] == 202
    assert first[1]["paymentRequestId"] != second[1]["paymentRequestId"]
    keys = {command.idempotency_key for command in facade.publisher.published}
    assert len(keys) == 2


@pytest.mark.parametrize(
    ("amount", "currency", "minor_units"),
    [
        ("10.50", "USD", 1050),
        ("10.5", "USD", 1050),
        ("0.01", "EUR", 1),
        ("1000", "JPY", 1000),
        ("1.234", "BHD", 1234),
        ("19.99", "GBP", 1999),
    ],
)
async def test_command_carries_exact_minor_units(
    facade: Facade, amount: str, currency: str, minor_units: int
) -> None:
    status, _, _ = await post_payment(facade, valid_body(amount=amount, currency=currency))
    assert status == 202
    [command] = facade.publisher.published
    assert command.amount == Money(minor_units, currency)


async def test_metadata_is_optional(facade: Facade) -> None:
    body = valid_body()
    del body["metadata"]
    del body["payerAccount"]["holderName"]
    status, _, _ = await post_payment(facade, body)
    assert status == 202
    assert dict(facade.publisher.published[0].metadata) == {}


async def test_content_type_with_utf8_charset_is_accepted(facade: Facade) -> None:
    status, _ = await post_raw(
        facade, json.dumps(valid_body()), content_type="application/json; charset=utf-8"
    )
    assert status == 202


async def test_prefer_wait_returns_the_final_payment(make_facade: MakeFacade) -> None:
    facade = await make_facade(waiter=FakeWaiter(final=True))
    payment_id = payment_request_id_for("order-1", "key-1", client_id=CLIENT)
    facade.publisher.completes = facade.queries
    facade.publisher.completes_with = _fingerprint(valid_body(), "key-1")
    status, body, headers = await post_payment(
        facade, headers={"Idempotency-Key": "key-1", "Prefer": "wait=5"}
    )
    assert status == 200
    assert body["paymentRequestId"] == payment_id
    assert body["status"] == "succeeded"
    assert body["paymentResult"] is True
    assert headers["Preference-Applied"] == "wait=5"
    assert headers["Location"] == f"/v1/payments/{payment_id}"
    assert facade.waiter.calls == [(payment_id, 5)]
    assert len(facade.publisher.published) == 1


async def test_prefer_wait_times_out_into_202(make_facade: MakeFacade) -> None:
    facade = await make_facade(waiter=FakeWaiter(final=False))
    status, body, headers = await post_payment(
        facade, headers={"Idempotency-Key": "key-1", "Prefer": "respond-async, wait=3"}
    )
    assert status == 202
    assert body["status"] == "pending"
    assert "Preference-Applied" not in headers
    payment_id = payment_request_id_for("order-1", "key-1", client_id=CLIENT)
    assert facade.waiter.calls == [(payment_id, 3)]


async def test_final_result_not_yet_readable_falls_back_to_202(make_facade: MakeFacade) -> None:
    facade = await make_facade(waiter=FakeWaiter(final=True))
    status, body, _ = await post_payment(facade, headers={"Prefer": "wait=2"})
    assert status == 202
    assert body["status"] == "pending"


async def test_prefer_wait_is_clamped_to_max_wait(make_facade: MakeFacade) -> None:
    facade = await make_facade(waiter=FakeWaiter(final=True), max_wait_s=4.0)
    payment_id = payment_request_id_for("order-1", "key-1", client_id=CLIENT)
    facade.publisher.completes = facade.queries
    facade.publisher.completes_with = _fingerprint(valid_body(), "key-1")
    status, _, headers = await post_payment(
        facade, headers={"Idempotency-Key": "key-1", "Prefer": "wait=600"}
    )
    assert status == 200
    assert facade.waiter.calls == [(payment_id, 4)]
    assert headers["Preference-Applied"] == "wait=4"


def test_max_wait_below_one_second_is_refused() -> None:
    fakes: dict[str, Any] = {
        "publisher": FakePublisher(),
        "queries": FakeQueries(),
        "waiter": FakeWaiter(),
        "metrics": Metrics(CollectorRegistry()),
    }
    with pytest.raises(ValueError, match="max_wait_s"):
        build_app(
            **fakes,
            refunds=FakeRefunds(),
            account_key=ACCOUNT_KEY,
            vault=memory_vault(ACCOUNT_KEY),
            authenticator=FakeAuthenticator(),
            rate_limiter=no_rate_limit(),
            max_wait_s=0.5,
        )


async def test_get_known_payment_masks_accounts(facade: Facade) -> None:
    payment_id = payment_request_id_for("order-1", "key-1", client_id=CLIENT)
    facade.queries.payments[payment_id] = stored_view(payment_id)
    response = await facade.client.get(f"/v1/payments/{payment_id}")
    assert response.status == 200
    body = await response.json()
    assert body == {
        "paymentRequestId": payment_id,
        "orderId": "order-1",
        "userId": "user-1",
        "status": "succeeded",
        "paymentResult": True,
        "amount": "10.50",
        "currency": "USD",
        "paymentMethod": "card",
        "payerAccount": {"type": "card", "number": "****4242"},
        "payeeAccount": {"type": "bank_account", "number": "****0001"},
        "provider": "sandbox",
        "providerReference": "sb_123",
        "error": None,
        "createdAt": "2026-03-01T12:00:00Z",
        "updatedAt": "2026-03-01T12:00:00Z",
        "capturedAmount": "10.50",
        "refundedAmount": "0.00",
        "refundableAmount": "10.50",
        "refunds": [],
        "nextAction": None,
    }
    assert SUCCESS_CARD not in await response.text()


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money(1000, "JPY"), "1000"),
        (Money(1234, "BHD"), "1.234"),
        (Money(10**15, "USD"), "10000000000000.00"),
    ],
)
async def test_amount_is_shown_with_the_currency_decimals(
    facade: Facade, money: Money, text: str
) -> None:
    payment_id = payment_request_id_for("order-1", "key-1", client_id=CLIENT)
    facade.queries.payments[payment_id] = stored_view(payment_id, amount=money)
    body = await (await facade.client.get(f"/v1/payments/{payment_id}")).json()
    assert body["amount"] == text
    assert body["currency"] == money.currency


async def test_failed_payment_carries_its_error(facade: Facade) -> None:
    payment_id = payment_request_id_for("order-1", "key-1", client_id=CLIENT)
    error = ErrorInfo(ErrorCode.INSUFFICIENT_FUNDS, "insufficient funds", decline_code="nsf")
    facade.queries.payments[payment_id] = stored_view(
        payment_id,
        status=PaymentStatus.FAILED,
        error=error,
        updated_at=datetime(2026, 3, 1, 12, 0, 1, 500000),  # naive, as SQLite returns it
    )
    body = await (await facade.client.get(f"/v1/payments/{payment_id}")).json()
    assert body["status"] == "failed"
    assert body["paymentResult"] is False
    assert body["error"] == error.to_dict()
    assert body["updatedAt"] == "2026-03-01T12:00:01.500000Z"


async def test_healthz(facade: Facade) -> None:
    response = await facade.client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_metrics_label_routes_by_template(facade: Facade) -> None:
    payment_id = payment_request_id_for("order-1", "key-1", client_id=CLIENT)
    facade.publisher.completes = facade.queries
    await post_payment(facade, headers={"Idempotency-Key": "key-1"})
    await facade.client.get(f"/v1/payments/{payment_id}")
    await facade.client.get("/v2/nothing")
    # /metrics is the ops listener's (paygate.ops_server): read the same exposition here.
    body, content_type = facade.metrics.exposition()
    assert content_type.startswith("text/plain")
    text = body.decode()
    assert "paygate_http_request_seconds_bucket" in text
    assert 'method="POST",route="/v1/payments",status="202"' in text
    assert 'method="GET",route="/v1/payments/{paymentRequestId}",status="200"' in text
    assert 'route="unmatched",status="404"' in text
    assert payment_id not in text
    assert "/v2/nothing" not in text


async def test_access_log_line_has_the_fields_and_no_account_number(
    facade: Facade, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="paygate.http"):
        status, body, headers = await post_payment(
            facade, headers={"Idempotency-Key": "key-1", "X-Request-Id": "req-123"}
        )
    assert status == 202
    assert headers["X-Request-Id"] == "req-123"
    [line] = [r for r in caplog.records if r.name == "paygate.http"]
    fields = vars(line)
    assert fields["method"] == "POST"
    assert fields["route"] == "/v1/payments"
    assert fields["status"] == 202
    assert fields["duration_ms"] >= 0
    assert fields["request_id"] == "req-123"
    assert fields["payment_request_id"] == body["paymentRequestId"]
    assert fields["order_id"] == "order-1"
    assert fields["client_id"] == CLIENT
    assert SUCCESS_CARD not in json.dumps(fields, default=str)
    assert API_KEY not in caplog.text


async def test_access_log_records_errors_with_a_generated_request_id(
    facade: Facade, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="paygate.http"):
        response = await facade.client.get(f"/v1/payments/{SUCCESS_CARD}")
    [line] = [r for r in caplog.records if r.name == "paygate.http"]
    assert vars(line)["status"] == 404
    assert vars(line)["route"] == "/v1/payments/{paymentRequestId}"
    assert "payment_request_id" not in vars(line)
    assert response.headers["X-Request-Id"] == vars(line)["request_id"]
    assert SUCCESS_CARD not in caplog.text


# --- idempotent replays and order protection, before anything is published ---------------


def _fingerprint(body: dict[str, Any], key: str) -> str:
    command = parse_create_payment_body(json.dumps(body).encode()).to_command(
        idempotency_key=key, requested_at=NOW, client_id=CLIENT
    )
    return command.parameters_fingerprint(ACCOUNT_KEY)


async def test_a_retry_of_a_finished_payment_replays_it_without_publishing(facade: Facade) -> None:
    payment_id = payment_request_id_for("order-1", "key-1", client_id=CLIENT)
    facade.queries.payments[payment_id] = stored_view(
        payment_id, parameters_hash=_fingerprint(valid_body(), "key-1")
    )
    status, body, headers = await post_payment(facade, headers={"Idempotency-Key": "key-1"})
    assert status == 200
    assert body["paymentRequestId"] == payment_id
    assert body["status"] == "succeeded"
    assert headers["Idempotent-Replayed"] == "true"
    assert facade.publisher.published == []


async def test_a_retry_of_an_unfinished_payment_is_202_without_publishing(facade: Facade) -> None:
    payment_id = payment_request_id_for("order-1", "key-1", client_id=CLIENT)
    facade.queries.payments[payment_id] = stored_view(
        payment_id,
        status=PaymentStatus.PENDING,
        parameters_hash=_fingerprint(valid_body(), "key-1"),
    )
    status, body, headers = await post_payment(facade, headers={"Idempotency-Key": "key-1"})
    assert status == 202
    assert body["paymentRequestId"] == payment_id
    assert headers["Idempotent-Replayed"] == "true"
    assert facade.publisher.published == []


async def test_a_key_reused_with_other_parameters_is_a_conflict(facade: Facade) -> None:
    payment_id = payment_request_id_for("order-1", "key-1", client_id=CLIENT)
    facade.queries.payments[payment_id] = stored_view(
        payment_id, parameters_hash=_fingerprint(valid_body(), "key-1")
    )
    status, body, _ = await post_payment(
        facade, valid_body(amount="99.00"), headers={"Idempotency-Key": "key-1"}
    )
    assert_error(status, body, ErrorCode.IDEMPOTENCY_CONFLICT, param="Idempotency-Key")
    assert facade.publisher.published == []


async def test_a_paid_order_refuses_a_new_payment(facade: Facade) -> None:
    paid = payment_request_id_for("order-1", "key-1", client_id=CLIENT)
    facade.queries.payments[paid] = stored_view(paid)
    status, body, _ = await post_payment(facade, headers={"Idempotency-Key": "key-2"})
    assert_error(status, body, ErrorCode.ORDER_ALREADY_PAID)
    assert facade.publisher.published == []


async def test_after_a_failed_payment_a_new_one_must_say_it_is_a_new_attempt(
    facade: Facade,
) -> None:
    failed = payment_request_id_for("order-1", "key-1", client_id=CLIENT)
    facade.queries.payments[failed] = stored_view(failed, status=PaymentStatus.FAILED)
    status, body, _ = await post_payment(facade, headers={"Idempotency-Key": "key-2"})
    assert_error(status, body, ErrorCode.NEW_ATTEMPT_REQUIRED, param="newAttempt")
    assert facade.publisher.published == []

    status, body, _ = await post_payment(
        facade, valid_body(newAttempt=True), headers={"Idempotency-Key": "key-2"}
    )
    assert status == 202
    (command,) = facade.publisher.published
    assert command.new_attempt is True


async def test_new_attempt_must_be_a_boolean(facade: Facade) -> None:
    status, body, _ = await post_payment(facade, valid_body(newAttempt="yes"))
    assert_error(status, body, ErrorCode.INVALID_REQUEST, param="newAttempt")
    assert facade.publisher.published == []


async def test_an_expired_key_makes_a_new_payment_of_the_next_generation(facade: Facade) -> None:
    old = payment_request_id_for("order-1", "key-1", client_id=CLIENT)
    facade.queries.payments[old] = stored_view(old, status=PaymentStatus.FAILED)
    facade.queries.expired_keys.add(old)
    status, body, _ = await post_payment(
        facade, valid_body(newAttempt=True), headers={"Idempotency-Key": "key-1"}
    )
    assert status == 202
    assert body["paymentRequestId"] == payment_request_id_for("order-1", "key-1", 1, CLIENT)
    (command,) = facade.publisher.published
    assert command.generation == 1


@pytest.mark.parametrize("path", ["/healthz", "/v1/payments/pay_unknown", "/nowhere"])
async def test_every_response_carries_the_security_headers(facade: Facade, path: str) -> None:
    response = await facade.client.get(path)
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
