"""Every error code's advice, followed, with the result the advice promises observed.

One row per code of the catalogue (``domain/errors.py``; the "what to do" column of
docs/errors.md). Each row names the words of the advice it follows, so that advice and
row cannot drift apart, and then does what a client reading that advice would do:

- against the facade (``build_app`` with an in-memory world, where the test plays the
  consumer and settles each published command as the pipeline would);
- for the two codes only the consumer meets (``malformed_message``, ``unknown_schema``),
  against the consumer's runner, where they arise. That the dead letters come back
  through ``paygate dlq republish`` is proved against a real broker in
  tests/integration/test_dead_letter_kinds.py and tests/integration/test_dlq_command.py.

A code added to the catalogue without a row here fails ``test_every_code_has_a_row``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient
from multidict import CIMultiDictProxy

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.payment_reconciler import PaymentReconciler
from consumer.payment_settlement import PaymentSettlement
from consumer.record_handling import RecordHandling
from domain.accounts import Account, AccountType
from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from domain.error_info import ErrorInfo
from domain.errors import CATALOGUE, ErrorCode, PaygateError
from domain.money import Money
from domain.payments import CreatePayment, payment_request_id_for
from domain.refunds import RefundPayment, RefundStatus, refund_id_for
from domain.status import PaymentStatus
from http_facade.rate_limit import TokenBuckets
from producer.command_publisher import KafkaCommandPublisher
from providers.errors import ProviderTimeoutError
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import create_payment
from tests.support.clock import Clock
from tests.support.facade_world import KEY_1, KEY_2, World, payment_body, world_client
from tests.support.fake_database import FakeDatabase
from tests.support.fake_stores import FakePaymentStore
from tests.support.fake_vault_rows import FakeVaultRows
from tests.support.held_producer import HeldProducer
from tests.support.scripted_provider import ScriptedProvider, charged
from tests.support.vault_keys import FINGERPRINT_KEY, KEK_1, KEK_1_WRONG, KEK_2
from vault.kek import LocalKeyEncryptionKeys
from vault.vault import Vault

pytestmark = pytest.mark.unit

CLIENT_1 = "client-1"
_UNSET: Any = object()


def payment_id(order_id: str, key: str, *, generation: int = 0) -> str:
    return payment_request_id_for(order_id, key, generation, CLIENT_1)


@dataclass
class Answer:
    status: int
    body: Any
    headers: CIMultiDictProxy[str]

    @property
    def code(self) -> str | None:
        """The error code of an error body, or of a payment's or refund's ``error``."""
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return None if error is None else str(error["code"])


class Advised:
    """A client of the facade, and the world behind it."""

    def __init__(self, client: TestClient[Any, Any], world: World) -> None:
        self.client = client
        self.world = world

    async def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = _UNSET,
        data: Any = None,
        key: str | None = KEY_1,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        if idempotency_key is not None:
            sent["Idempotency-Key"] = idempotency_key
        options: dict[str, Any] = {"headers": sent}
        if json is not _UNSET:
            options["json"] = json
        elif data is not None:
            options["data"] = data
        async with self.client.request(method, path, **options) as response:
            body = await response.json() if response.content_type == "application/json" else None
            return Answer(response.status, body, response.headers)

    async def pay(self, idempotency_key: str, **changes: Any) -> Answer:
        headers = changes.pop("headers", None)
        return await self.send(
            "POST",
            "/v1/payments",
            json=payment_body(**changes),
            idempotency_key=idempotency_key,
            headers=headers,
        )

    async def refund(self, payment: str, idempotency_key: str, **body: Any) -> Answer:
        return await self.send(
            "POST", f"/v1/payments/{payment}/refunds", json=body, idempotency_key=idempotency_key
        )

    async def get(self, path: str, *, key: str = KEY_1) -> Answer:
        return await self.send("GET", path, key=key)

    def published_payment(self) -> CreatePayment:
        command = self.world.last()
        assert isinstance(command, CreatePayment)
        return command

    def published_refund(self) -> RefundPayment:
        command = self.world.last()
        assert isinstance(command, RefundPayment)
        return command

    async def paid(
        self, key: str, status: PaymentStatus, error: ErrorCode | None = None, **changes: Any
    ) -> str:
        """A payment created through the facade and settled by the consumer; its id."""
        answer = await self.pay(key, **changes)
        assert answer.status == 202, answer.body
        self.world.settle_payment(self.published_payment(), status, error)
        return str(answer.body["paymentRequestId"])

    def published_as(self, payment_request_id: str) -> CreatePayment:
        """The command published for the payment."""
        return next(
            c
            for c in self.world.published
            if isinstance(c, CreatePayment) and c.payment_request_id == payment_request_id
        )


MakeAdvised = Callable[..., Awaitable[Advised]]
Scenario = Callable[[MakeAdvised, ErrorCode], Awaitable[None]]
SCENARIOS: dict[ErrorCode, tuple[str, Scenario]] = {}


def row(*codes: ErrorCode, follows: str) -> Callable[[Scenario], Scenario]:
    """Registers the scenario as the row of ``codes``; ``follows`` is the part of each
    code's advice that the scenario does.

    The scenario is called with the code whose row runs, for rows shared by codes."""

    def register(scenario: Scenario) -> Scenario:
        for code in codes:
            assert code not in SCENARIOS, f"two rows for {code}"
            SCENARIOS[code] = (follows, scenario)
        return scenario

    return register


def refused(answer: Answer, code: ErrorCode) -> None:
    """``answer`` is the facade's refusal with ``code``, at the catalogue's status."""
    assert (answer.status, answer.code) == (CATALOGUE[code].http_status, code.value), answer.body


# --- request validation: fix what `param` names, and the same request changes nothing --------


@row(ErrorCode.INVALID_REQUEST, follows="Fix the field named in `param` and send again")
async def _invalid_request(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    for _ in range(2):  # the same request again: the same answer, nothing published
        answer = await f.pay("k-1", colour="blue")
        refused(answer, ErrorCode.INVALID_REQUEST)
        assert answer.body["error"]["param"] == "colour"
    assert f.world.published == []
    assert (await f.pay("k-1")).status == 202


@row(ErrorCode.INVALID_TEXT, follows="Remove the character (the message gives its position)")
async def _invalid_text(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    for _ in range(2):  # the same request again: the same answer, nothing published
        refused(await f.pay("k-1", metadata={"note": "a\x00b"}), ErrorCode.INVALID_TEXT)
    assert f.world.published == []
    assert (await f.pay("k-1", metadata={"note": "ab"})).status == 202


@row(ErrorCode.ACCOUNT_NUMBER_IN_TEXT, follows="Send account numbers only as payerAccount")
async def _account_number_in_text(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    for _ in range(2):  # the same request again: the same answer, nothing published
        refused(await f.pay("k-1", metadata={"note": "card 4242424242424242"}), code)
    assert f.world.published == []
    assert (await f.pay("k-1", metadata={"note": "card ****4242"})).status == 202


@row(ErrorCode.INVALID_AMOUNT, follows='Send the amount as a string such as "10.50"')
async def _invalid_amount(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    refused(await f.pay("k-1", amount=10.5), ErrorCode.INVALID_AMOUNT)
    assert (await f.pay("k-1", amount="10.50")).status == 202


@row(ErrorCode.UNSUPPORTED_CURRENCY, follows='upper-case ISO 4217 code such as "EUR"')
async def _unsupported_currency(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    refused(await f.pay("k-1", currency="eur"), ErrorCode.UNSUPPORTED_CURRENCY)
    assert (await f.pay("k-1", currency="EUR")).status == 202


@row(ErrorCode.REQUEST_TOO_LARGE, follows="Send a smaller body; metadata is the usual culprit")
async def _request_too_large(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    refused(await f.pay("k-1", metadata={"notes": "x" * 70_000}), ErrorCode.REQUEST_TOO_LARGE)
    assert (await f.pay("k-1", metadata={"notes": "x"})).status == 202


@row(ErrorCode.REQUEST_TIMEOUT, follows="retrying with the same Idempotency-Key is safe")
async def _request_timeout(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make(body_timeout_s=0.2)
    never = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b'{"userId": '
        await never.wait()

    answer = await f.send(
        "POST",
        "/v1/payments",
        data=stalled(),
        idempotency_key="k-1",
        headers={"Content-Type": "application/json"},
    )
    refused(answer, ErrorCode.REQUEST_TIMEOUT)
    assert f.world.published == []
    answer = await f.pay("k-1")
    assert (answer.status, answer.body["paymentRequestId"]) == (202, payment_id("order-1", "k-1"))


@row(ErrorCode.UNSUPPORTED_MEDIA_TYPE, follows="Set Content-Type: application/json")
async def _unsupported_media_type(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    text = json.dumps(payment_body())
    answer = await f.send("POST", "/v1/payments", data=text, headers={"Content-Type": "text/plain"})
    refused(answer, ErrorCode.UNSUPPORTED_MEDIA_TYPE)
    assert f.world.published == []
    answer = await f.send(
        "POST", "/v1/payments", data=text, headers={"Content-Type": "application/json"}
    )
    assert answer.status == 202


@row(ErrorCode.AUTHENTICATION_FAILED, follows="Send a valid key as `Authorization: Bearer <key>`")
async def _authentication_failed(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    refused(
        await f.send("GET", "/v1/payments?orderId=o", key=None), ErrorCode.AUTHENTICATION_FAILED
    )
    assert (await f.get("/v1/payments?orderId=o")).status == 200


@row(ErrorCode.NOT_FOUND, follows="poll, or create it with `Prefer: wait=N`")
async def _not_found(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    accepted = await f.pay("k-1")
    path = f"/v1/payments/{accepted.body['paymentRequestId']}"
    refused(await f.get(path), ErrorCode.NOT_FOUND)  # accepted, not processed yet
    f.world.settle_payment(f.published_payment(), PaymentStatus.SUCCEEDED)
    assert (await f.get(path)).status == 200  # polled again: there
    refused(await f.get(path, key=KEY_2), ErrorCode.NOT_FOUND)  # another client's key

    # Or created with Prefer: wait, which answers the payment itself once it is final.
    def consumer_settles(world: World) -> None:
        command = world.last()
        assert isinstance(command, CreatePayment)
        world.settle_payment(command, PaymentStatus.SUCCEEDED)

    f.world.while_waiting = consumer_settles
    answer = await f.pay("k-2", order_id="order-2", headers={"Prefer": "wait=5"})
    assert (answer.status, answer.body["status"]) == (200, "succeeded")


@row(ErrorCode.METHOD_NOT_ALLOWED, follows="Use a method listed in the Allow header")
async def _method_not_allowed(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    answer = await f.send("DELETE", "/v1/payments")
    refused(answer, ErrorCode.METHOD_NOT_ALLOWED)
    allowed = {m.strip() for m in answer.headers["Allow"].split(",")}
    assert "POST" in allowed
    assert (await f.pay("k-1")).status == 202


# --- keys and orders -------------------------------------------------------------------------


@row(ErrorCode.IDEMPOTENCY_CONFLICT, follows="send the parameters first used with this key")
async def _idempotency_conflict(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    first = await f.paid("k-1", PaymentStatus.SUCCEEDED)
    refused(await f.pay("k-1", amount="11.00"), ErrorCode.IDEMPOTENCY_CONFLICT)
    # The first parameters again: that request's outcome.
    answer = await f.pay("k-1")
    assert (answer.status, answer.body["paymentRequestId"], answer.body["status"]) == (
        200,
        first,
        "succeeded",
    )
    assert answer.headers["Idempotent-Replayed"] == "true"
    # A different request under a new key is a new payment, and order protection applies.
    refused(await f.pay("k-2", amount="11.00"), ErrorCode.ORDER_ALREADY_PAID)

    # On a refund: the same key with another amount conflicts; a new key is a new refund.
    refund = await f.refund(first, "r-1", amount="1.00", currency="EUR")
    assert refund.status == 202
    f.world.settle_refund(f.published_refund(), RefundStatus.SUCCEEDED)
    refused(
        await f.refund(first, "r-1", amount="2.00", currency="EUR"), ErrorCode.IDEMPOTENCY_CONFLICT
    )
    answer = await f.refund(first, "r-2", amount="2.00", currency="EUR")
    assert (answer.status, answer.body["refundId"]) == (202, refund_id_for(first, "r-2"))


@row(ErrorCode.ORDER_ALREADY_PAID, follows="list its payments (`GET /v1/payments?orderId=...`)")
async def _order_already_paid(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    paid = await f.paid("k-1", PaymentStatus.SUCCEEDED)
    refused(await f.pay("k-2"), ErrorCode.ORDER_ALREADY_PAID)
    refused(await f.pay("k-3", newAttempt=True), ErrorCode.ORDER_ALREADY_PAID)  # no way round
    listed = await f.get("/v1/payments?orderId=order-1")
    assert [(p["paymentRequestId"], p["status"]) for p in listed.body["data"]] == [
        (paid, "succeeded")
    ]
    assert (await f.refund(paid, "r-1")).status == 202  # refund it if needed

    # An authorized one: capture it.
    authorized = await f.paid("k-1", PaymentStatus.AUTHORIZED, order_id="order-a", capture=False)
    refused(await f.pay("k-2", order_id="order-a"), ErrorCode.ORDER_ALREADY_PAID)
    assert (await f.send("POST", f"/v1/payments/{authorized}/capture")).status == 202

    # A pending one becomes final by itself; only if it fails may a new attempt follow.
    pending = await f.paid(
        "k-1", PaymentStatus.PENDING, ErrorCode.PROVIDER_TIMEOUT, order_id="order-p"
    )
    refused(await f.pay("k-2", order_id="order-p", newAttempt=True), ErrorCode.ORDER_ALREADY_PAID)
    f.world.settle_payment(
        f.published_as(pending), PaymentStatus.FAILED, ErrorCode.PAYMENT_DECLINED
    )
    assert (await f.pay("k-2", order_id="order-p", newAttempt=True)).status == 202


@row(ErrorCode.NEW_ATTEMPT_REQUIRED, follows="send newAttempt: true with a new idempotency key")
async def _new_attempt_required(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    failed = await f.paid("k-1", PaymentStatus.FAILED, ErrorCode.PAYMENT_DECLINED)
    refused(await f.pay("k-2"), ErrorCode.NEW_ATTEMPT_REQUIRED)
    answer = await f.pay("k-2", newAttempt=True)
    assert answer.status == 202
    assert answer.body["paymentRequestId"] == payment_id("order-1", "k-2") != failed
    assert f.published_payment().new_attempt


# --- what the provider said: a final outcome replays; a new attempt is a new payment ---------


@row(
    ErrorCode.PAYMENT_DECLINED,
    ErrorCode.INSUFFICIENT_FUNDS,
    ErrorCode.INVALID_ACCOUNT,
    follows="then send a new attempt: `newAttempt: true` with a new Idempotency-Key",
)
async def _declined(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    failed = await f.paid("k-1", PaymentStatus.FAILED, code)
    await _same_key_replays_the_failed_payment(f, "k-1", failed, code)
    other_card = {"type": "card", "number": "5555555555554444"}
    answer = await f.pay("k-2", newAttempt=True, payerAccount=other_card)
    assert answer.status == 202
    assert answer.body["paymentRequestId"] != failed
    assert f.published_payment().payer.ref(b"k").masked == "****4444"


async def _same_key_replays_the_failed_payment(
    f: Advised, key: str, failed: str, code: ErrorCode, **changes: Any
) -> None:
    published = len(f.world.published)
    answer = await f.pay(key, **changes)
    assert (answer.status, answer.body["paymentRequestId"], answer.body["status"]) == (
        200,
        failed,
        "failed",
    )
    assert answer.code == code.value
    assert answer.headers["Idempotent-Replayed"] == "true"
    assert len(f.world.published) == published  # nothing sent again


@row(
    ErrorCode.PAYMENT_EXPIRED,
    follows="To try again, send a new attempt: `newAttempt: true` with a new Idempotency-Key",
)
async def _expired(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    expired = await f.paid("k-1", PaymentStatus.EXPIRED, code)
    published = len(f.world.published)
    replay = await f.pay("k-1")
    assert (replay.status, replay.body["paymentRequestId"], replay.body["status"]) == (
        200,
        expired,
        "expired",
    )
    assert replay.code == code.value
    assert len(f.world.published) == published  # the same key sends nothing again
    answer = await f.pay("k-2", newAttempt=True)
    assert answer.status == 202
    assert answer.body["paymentRequestId"] != expired


@row(
    ErrorCode.FRAUD_SUSPECTED, follows="Do not retry (the same Idempotency-Key replays the decline)"
)
async def _fraud_suspected(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    failed = await f.paid("k-1", PaymentStatus.FAILED, ErrorCode.FRAUD_SUSPECTED)
    await _same_key_replays_the_failed_payment(f, "k-1", failed, ErrorCode.FRAUD_SUSPECTED)


@row(
    ErrorCode.PROVIDER_UNAVAILABLE,
    follows="a payment as a new attempt (`newAttempt: true` with a new Idempotency-Key)",
)
async def _provider_unavailable(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    failed = await f.paid("k-1", PaymentStatus.FAILED, ErrorCode.PROVIDER_UNAVAILABLE)
    await _same_key_replays_the_failed_payment(f, "k-1", failed, ErrorCode.PROVIDER_UNAVAILABLE)
    answer = await f.pay("k-2", newAttempt=True)
    assert (answer.status, answer.body["paymentRequestId"]) == (202, payment_id("order-1", "k-2"))

    # A refund that failed so: the same key replays it, a new key is a new refund.
    paid = await f.paid("k-1", PaymentStatus.SUCCEEDED, order_id="order-r")
    assert (await f.refund(paid, "r-1")).status == 202
    f.world.settle_refund(f.published_refund(), RefundStatus.FAILED, ErrorCode.PROVIDER_UNAVAILABLE)
    replayed = await f.refund(paid, "r-1")
    assert (replayed.status, replayed.body["status"], replayed.code) == (
        200,
        "failed",
        "provider_unavailable",
    )
    answer = await f.refund(paid, "r-2")
    assert (answer.status, answer.body["refundId"]) == (202, refund_id_for(paid, "r-2"))


@row(
    ErrorCode.PROVIDER_TIMEOUT,
    follows="send the same request with the same Idempotency-Key and `Prefer: wait=N`",
)
async def _provider_timeout(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    pending = await f.paid("k-1", PaymentStatus.PENDING, ErrorCode.PROVIDER_TIMEOUT)
    command = f.published_payment()
    # Read later: still pending, and the same request sends nothing again.
    assert (await f.get(f"/v1/payments/{pending}")).body["status"] == "pending"
    answer = await f.pay("k-1")
    assert (answer.status, answer.body["paymentRequestId"]) == (202, pending)
    assert len(f.world.published) == 1
    # Not a new attempt: it may have been charged.
    refused(await f.pay("k-2", newAttempt=True), ErrorCode.ORDER_ALREADY_PAID)
    # The provider confirms (the reconciler); the same request with Prefer: wait answers it.
    f.world.settle_payment(command, PaymentStatus.SUCCEEDED)
    f.world.final_within_wait = True
    answer = await f.pay("k-1", headers={"Prefer": "wait=5"})
    assert (answer.status, answer.body["status"]) == (200, "succeeded")


@row(
    ErrorCode.SETTLED_BY_OPERATOR,
    follows="a payment with `newAttempt: true` and a new Idempotency-Key",
)
async def _settled_by_operator(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    failed = await f.paid("k-1", PaymentStatus.FAILED, code)
    await _same_key_replays_the_failed_payment(f, "k-1", failed, code)
    answer = await f.pay("k-2", newAttempt=True)
    assert (answer.status, answer.body["paymentRequestId"]) == (202, payment_id("order-1", "k-2"))

    # A refund failed so: the same key replays it, a new key is a new refund.
    paid = await f.paid("k-1", PaymentStatus.SUCCEEDED, order_id="order-r")
    assert (await f.refund(paid, "r-1")).status == 202
    f.world.settle_refund(f.published_refund(), RefundStatus.FAILED, code)
    replayed = await f.refund(paid, "r-1")
    assert (replayed.status, replayed.body["status"], replayed.code) == (200, "failed", code.value)
    answer = await f.refund(paid, "r-2")
    assert (answer.status, answer.body["refundId"]) == (202, refund_id_for(paid, "r-2"))


@row(ErrorCode.NOT_WITHHELD, follows="Leave it to the reconciler")
async def _not_withheld(make: MakeAdvised, code: ErrorCode) -> None:
    """Only ``paygate reconcile settle`` meets it (consumer.payment_settlement): a payment
    still inside its provider's window is refused, and the reconciler then settles it."""
    clock = Clock()
    store = FakePaymentStore(FakeDatabase(clock))
    provider = ScriptedProvider()
    provider.idempotency_window = timedelta(hours=24)
    handler = PaymentCommandHandler(
        store=store,
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=PaymentEvents(PaymentMessages.bundled(), "payments.results"),
        account_key=b"advice-account-key",
        metrics=Metrics(),
        clock=clock,
    )
    settlement = PaymentSettlement(
        store=store,
        providers=Providers.of(provider),
        events=handler_events(),
        strays=NoSweep(),
        clock=clock,
    )
    command = create_payment()
    provider.script("charge", ProviderTimeoutError(provider.name, "no answer in time"))
    assert await handler.handle(command) is Outcome.PENDING
    clock.now += timedelta(hours=2)
    with pytest.raises(PaygateError) as refused:
        await settlement.settle(command.payment_request_id, fail_reason="nothing at the provider")
    assert refused.value.code is code
    assert provider.called("charge_status") == []  # nothing asked, nothing changed
    # The reconciler's pass: it claims the payment and settles it from the provider's answer.
    provider.script("charge_status", charged("ch_1"))
    reconciler = PaymentReconciler(
        store=store, handler=handler, metrics=Metrics(), min_age=timedelta(0), clock=clock
    )
    assert (await reconciler.run_once()).resolved == 1
    payment = await store.get_payment(command.payment_request_id)
    assert payment is not None
    assert payment.status is PaymentStatus.SUCCEEDED


class NoSweep:
    async def hold_first_question(self, attempt_key: str, until: datetime) -> bool:
        raise AssertionError("a refused settlement holds nothing back")


def handler_events() -> PaymentEvents:
    return PaymentEvents(PaymentMessages.bundled(), "payments.results")


# --- refunds and captures --------------------------------------------------------------------


@row(ErrorCode.PAYMENT_NOT_REFUNDABLE, follows="Refund only payments whose status is succeeded")
async def _payment_not_refundable(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    failed = await f.paid("k-1", PaymentStatus.FAILED, ErrorCode.PAYMENT_DECLINED)
    for _ in range(2):
        refused(await f.refund(failed, "r-1"), ErrorCode.PAYMENT_NOT_REFUNDABLE)
    paid = await f.paid("k-1", PaymentStatus.SUCCEEDED, order_id="order-2")
    assert (await f.refund(paid, "r-1")).status == 202


@row(ErrorCode.PAYMENT_NOT_CAPTURABLE, follows="Capture only payments created with capture: false")
async def _payment_not_capturable(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    failed = await f.paid("k-1", PaymentStatus.FAILED, ErrorCode.PAYMENT_DECLINED)
    for _ in range(2):
        refused(
            await f.send("POST", f"/v1/payments/{failed}/capture"), ErrorCode.PAYMENT_NOT_CAPTURABLE
        )
    held = await f.paid("k-1", PaymentStatus.AUTHORIZED, order_id="order-2", capture=False)
    answer = await f.send("POST", f"/v1/payments/{held}/capture")
    assert (answer.status, answer.body["status"]) == (202, "capturing")
    assert isinstance(f.world.last(), CapturePayment)


@row(ErrorCode.CAPTURE_EXCEEDS_AUTHORIZED, follows="Capture at most the payment's `amount`")
async def _capture_exceeds_authorized(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    held = await f.paid("k-1", PaymentStatus.AUTHORIZED, capture=False)
    capture = f"/v1/payments/{held}/capture"
    for _ in range(2):
        refused(await f.send("POST", capture, json={"amount": "10.51"}), code)
    assert f.world.payments[held].status is PaymentStatus.AUTHORIZED
    answer = await f.send("POST", capture, json={"amount": "10.50"})  # its `amount`
    assert (answer.status, answer.body["status"]) == (202, "capturing")
    assert isinstance(f.world.last(), CapturePayment)


@row(ErrorCode.PAYMENT_NOT_CANCELABLE, follows="Refund a captured payment instead")
async def _payment_not_cancelable(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    paid = await f.paid("k-1", PaymentStatus.SUCCEEDED)
    for _ in range(2):
        refused(await f.send("POST", f"/v1/payments/{paid}/cancel"), code)
    assert (await f.refund(paid, "r-1")).status == 202
    held = await f.paid("k-1", PaymentStatus.AUTHORIZED, order_id="order-2", capture=False)
    answer = await f.send("POST", f"/v1/payments/{held}/cancel")
    assert (answer.status, answer.body["status"]) == (202, "canceling")
    assert isinstance(f.world.last(), CancelPayment)


@row(ErrorCode.PAYMENT_ALREADY_CAPTURED, follows="Refund it to return the money")
async def _payment_already_captured(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    held = await f.paid("k-1", PaymentStatus.AUTHORIZED, capture=False)
    answer = await f.send("POST", f"/v1/payments/{held}/cancel")
    assert (answer.status, answer.body["status"]) == (202, "canceling")
    # The consumer finds 4.00 of it captured by hand at the provider: the cancel is refused.
    f.world.payments[held] = dataclasses.replace(
        f.world.payments[held],
        status=PaymentStatus.SUCCEEDED,
        captured_minor=400,
        provider_reference="ch_1",
        error=ErrorInfo(code, "captured at the provider"),
    )
    read = await f.get(f"/v1/payments/{held}")  # "Read the payment"
    assert (read.body["status"], read.body["capturedAmount"], read.code) == (
        "succeeded",
        "4.00",
        code.value,
    )
    refund = await f.refund(held, "r-1", amount=read.body["refundableAmount"], currency="EUR")
    assert refund.status == 202
    assert f.published_refund().amount == Money(400, "EUR")


@row(ErrorCode.PAYMENT_ALREADY_CANCELED, follows="send a new attempt: `newAttempt: true`")
async def _payment_already_canceled(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    held = await f.paid("k-1", PaymentStatus.AUTHORIZED, capture=False)
    answer = await f.send("POST", f"/v1/payments/{held}/capture")
    assert (answer.status, answer.body["status"]) == (202, "capturing")
    # The consumer finds the hold voided at the provider: the capture is refused.
    f.world.payments[held] = dataclasses.replace(
        f.world.payments[held],
        status=PaymentStatus.CANCELED,
        error=ErrorInfo(code, "voided at the provider"),
    )
    read = await f.get(f"/v1/payments/{held}")
    assert (read.body["status"], read.body["refundableAmount"], read.code) == (
        "canceled",
        "0.00",
        code.value,
    )
    again = await f.pay("k-2", newAttempt=True)
    assert again.status == 202
    assert again.body["paymentRequestId"] != held


@row(ErrorCode.REFUND_EXCEEDS_CAPTURED, follows="Refund at most the payment's `refundableAmount`")
async def _refund_exceeds_captured(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    paid = await f.paid("k-1", PaymentStatus.SUCCEEDED)
    assert (await f.refund(paid, "r-1", amount="4.00", currency="EUR")).status == 202
    f.world.settle_refund(f.published_refund(), RefundStatus.SUCCEEDED)
    refused(
        await f.refund(paid, "r-2", amount="10.50", currency="EUR"),
        ErrorCode.REFUND_EXCEEDS_CAPTURED,
    )
    refundable = (await f.get(f"/v1/payments/{paid}")).body["refundableAmount"]
    assert refundable == "6.50"
    answer = await f.refund(paid, "r-2", amount=refundable, currency="EUR")
    assert answer.status == 202


@row(ErrorCode.CURRENCY_MISMATCH, follows="Refund in the currency the payment was made in")
async def _currency_mismatch(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    paid = await f.paid("k-1", PaymentStatus.SUCCEEDED)
    refused(await f.refund(paid, "r-1", amount="1.00", currency="USD"), ErrorCode.CURRENCY_MISMATCH)
    assert (await f.refund(paid, "r-1", amount="1.00", currency="EUR")).status == 202


@row(ErrorCode.REFUND_FAILED, follows="before refunding again with a new Idempotency-Key")
async def _refund_failed(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    paid = await f.paid("k-1", PaymentStatus.SUCCEEDED)
    assert (await f.refund(paid, "r-1", amount="3.00", currency="EUR")).status == 202
    f.world.settle_refund(f.published_refund(), RefundStatus.FAILED, ErrorCode.REFUND_FAILED)
    replayed = await f.refund(paid, "r-1", amount="3.00", currency="EUR")
    assert (replayed.status, replayed.body["status"], replayed.code) == (
        200,
        "failed",
        "refund_failed",
    )
    assert (await f.get(f"/v1/payments/{paid}")).body["refundableAmount"] == "10.50"  # unchanged
    answer = await f.refund(paid, "r-2", amount="3.00", currency="EUR")
    assert (answer.status, answer.body["refundId"]) == (202, refund_id_for(paid, "r-2"))


@row(
    ErrorCode.REFUND_FAILED_AFTER_SUCCESS,
    follows="Refund it once more with a new Idempotency-Key",
)
async def _refund_failed_after_success(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    paid = await f.paid("k-1", PaymentStatus.SUCCEEDED)
    assert (await f.refund(paid, "r-1", amount="3.00", currency="EUR")).status == 202
    refund = f.world.settle_refund(f.published_refund(), RefundStatus.SUCCEEDED)
    assert (await f.get(f"/v1/payments/{paid}")).body["refundableAmount"] == "7.50"
    # The provider fails it later (persistence.refund_failed_later, as the store records it).
    f.world.refunds[refund.refund_id] = dataclasses.replace(
        refund,
        status=RefundStatus.FAILED,
        error=ErrorInfo(code, "stripe failed the refund after it had succeeded"),
    )
    payment = f.world.payments[paid]
    f.world.payments[paid] = dataclasses.replace(
        payment, refunded_minor=0, status=PaymentStatus.SUCCEEDED
    )
    shown = await f.get(f"/v1/refunds/{refund.refund_id}")
    assert (shown.status, shown.body["status"], shown.body["error"]["code"]) == (
        200,
        "failed",
        "refund_failed_after_success",
    )
    assert (await f.get(f"/v1/payments/{paid}")).body["refundableAmount"] == "10.50"
    answer = await f.refund(paid, "r-2", amount="3.00", currency="EUR")
    assert (answer.status, answer.body["refundId"]) == (202, refund_id_for(paid, "r-2"))


# --- the client's own pace -------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@row(ErrorCode.RATE_LIMITED, follows="Wait for Retry-After seconds, then retry")
async def _rate_limited(make: MakeAdvised, code: ErrorCode) -> None:
    clock = FakeClock()
    f = await make(rate_limiter=TokenBuckets(rate_per_s=0.5, burst=1, clock=clock))
    assert (await f.get("/v1/payments?orderId=o")).status == 200
    answer = await f.get("/v1/payments?orderId=o")
    refused(answer, ErrorCode.RATE_LIMITED)
    clock.now += int(answer.headers["Retry-After"])
    assert (await f.get("/v1/payments?orderId=o")).status == 200


# --- dependencies down -----------------------------------------------------------------------


@row(ErrorCode.SERVICE_UNAVAILABLE, follows="then retry with the same Idempotency-Key")
async def _service_unavailable(make: MakeAdvised, code: ErrorCode) -> None:
    # Kafka does not acknowledge within the deadline: 503, and the record stays queued.
    producer = HeldProducer()
    messages = PaymentMessages.bundled()
    publisher = KafkaCommandPublisher(producer, messages, "commands", timeout_s=0.05)
    f = await make(publisher=publisher)
    answer = await f.pay("k-1")
    refused(answer, ErrorCode.SERVICE_UNAVAILABLE)
    assert int(answer.headers["Retry-After"]) >= 1
    # Kafka is back: the abandoned record arrives after all, and the client's retry with
    # the same key is the same payment; the consumer, playing its part, makes one of both.
    [(_, late_delivery)] = producer.queued
    late_delivery.set_result("metadata")
    producer.auto_ack = True
    answer = await f.pay("k-1")
    expected = payment_id("order-1", "k-1")
    assert (answer.status, answer.body["paymentRequestId"]) == (202, expected)
    copies = [messages.decode_command(value) for value, _ in producer.queued]
    assert [c.payment_request_id for c in copies] == [expected, expected]
    for copy in copies:
        f.world.settle_payment(copy, PaymentStatus.SUCCEEDED)
    listed = await f.get("/v1/payments?orderId=order-1")
    assert [p["paymentRequestId"] for p in listed.body["data"]] == [expected]
    answer = await f.pay("k-1")  # and the retry answers it
    assert (answer.status, answer.body["status"]) == (200, "succeeded")

    # The database is down: 503 (the API-key lookup included); back, the retry is answered.
    f = await make()
    f.world.database_down = True
    answer = await f.pay("k-1")
    refused(answer, ErrorCode.SERVICE_UNAVAILABLE)
    assert int(answer.headers["Retry-After"]) >= 1
    assert f.world.published == []
    f.world.database_down = False
    answer = await f.pay("k-1")
    assert (answer.status, answer.body["paymentRequestId"]) == (202, expected)


@row(ErrorCode.INTERNAL_ERROR, follows="Answered 500: retry with the same Idempotency-Key")
async def _internal_error(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    f.world.publish_error = RuntimeError("a bug")
    refused(await f.pay("k-1"), ErrorCode.INTERNAL_ERROR)
    f.world.publish_error = None
    answer = await f.pay("k-1")
    assert (answer.status, answer.body["paymentRequestId"]) == (202, payment_id("order-1", "k-1"))

    # A payment that failed with it (the provider refused the request as invalid): the
    # same key replays it; a new attempt is a new payment.
    failed = await f.paid("k-1", PaymentStatus.FAILED, ErrorCode.INTERNAL_ERROR, order_id="order-2")
    await _same_key_replays_the_failed_payment(
        f, "k-1", failed, ErrorCode.INTERNAL_ERROR, order_id="order-2"
    )
    answer = await f.pay("k-2", order_id="order-2", newAttempt=True)
    assert (answer.status, answer.body["paymentRequestId"]) == (202, payment_id("order-2", "k-2"))


@row(
    ErrorCode.WEBHOOK_URL_REFUSED,
    follows="Register a public `https` URL whose host resolves only to public addresses",
)
async def _webhook_url_refused(make: MakeAdvised, code: ErrorCode) -> None:
    f = await make()
    f.world.dns.update({"hooks.shop.example": ["93.184.215.14"], "intranet.example": ["10.1.2.3"]})
    events = ["payment.succeeded"]
    for url in ("http://hooks.shop.example/in", "https://intranet.example/in"):
        answer = await f.send(
            "POST", "/v1/webhook_endpoints", json={"url": url, "enabledEvents": events}
        )
        refused(answer, ErrorCode.WEBHOOK_URL_REFUSED)
    assert (await f.get("/v1/webhook_endpoints")).body["data"] == []
    url = "https://hooks.shop.example/in"
    answer = await f.send(
        "POST", "/v1/webhook_endpoints", json={"url": url, "enabledEvents": events}
    )
    assert (answer.status, answer.body["url"]) == (201, url)


# --- the consumer's own codes, where they arise ----------------------------------------------


@dataclass
class Record:
    """The fields of an aiokafka ConsumerRecord the runner reads."""

    value: bytes
    key: bytes = b"order-1"
    topic: str = "payments.commands"
    partition: int = 0
    offset: int = 7
    headers: tuple[tuple[str, bytes], ...] = ()


class DeadLetters:
    def __init__(self) -> None:
        self.routed: list[tuple[bytes | None, str]] = []

    async def route(self, *, value: bytes | None, error: Any, **where: Any) -> None:
        self.routed.append((value, error.code.value))


class Handler:
    def __init__(self) -> None:
        self.handled: list[object] = []

    async def handle(self, command: object) -> None:
        self.handled.append(command)


def consumer_runner() -> tuple[RecordHandling, DeadLetters, Handler]:
    """The consumer's handling of one record, as the runner runs it."""
    dead_letters, handler = DeadLetters(), Handler()
    runner = RecordHandling(
        messages=PaymentMessages.bundled(),
        handler=cast(Any, handler),
        dead_letters=cast(Any, dead_letters),
        max_attempts=3,
        max_backoff_s=0.0,
    )
    return runner, dead_letters, handler


def _valid_command_bytes() -> bytes:
    from tests.support.builders import create_payment

    return PaymentMessages.bundled().encode_command(create_payment(order_id="order-1"))


@row(
    ErrorCode.MALFORMED_MESSAGE,
    ErrorCode.UNKNOWN_SCHEMA,
    follows="the message is in the dead-letter topic",
)
async def _poison(make: MakeAdvised, code: ErrorCode) -> None:
    valid = _valid_command_bytes()
    poison = {
        ErrorCode.MALFORMED_MESSAGE: b"\x01" + valid[1:],  # bad magic byte
        ErrorCode.UNKNOWN_SCHEMA: b"\x00\x00\x00\x03\xe7" + valid[5:],  # schema id 999
    }[code]
    runner, dead_letters, handler = consumer_runner()
    # Handled twice (a redelivery): dead-lettered each time, as it came, never handled.
    for _ in range(2):
        await runner.handle(cast(Any, Record(poison)))
    assert dead_letters.routed == [(poison, code.value)] * 2
    assert handler.handled == []
    # The producer fixed, the same command is processed.
    await runner.handle(cast(Any, Record(valid)))
    assert len(handler.handled) == 1


# --- the vault's codes, where the vault raises them ------------------------------------------
# (That a command meeting one is dead-lettered, or answered 4xx, and never reaches a
# provider is proved where the vault is wired in.)


async def _vault_refuses(code: ErrorCode, work: Awaitable[object]) -> None:
    with pytest.raises(PaygateError) as caught:
        await work
    assert caught.value.code is code


def _vault(rows: FakeVaultRows, keks: str = KEK_1) -> Vault:
    return Vault(rows, LocalKeyEncryptionKeys.from_text(keks), FINGERPRINT_KEY)


_VAULT_CARD = Account(AccountType.CARD, "4242424242424242")


@row(ErrorCode.PAYMENT_METHOD_NOT_FOUND, follows="Tokenize the account again")
async def _payment_method_not_found(make: MakeAdvised, code: ErrorCode) -> None:
    vault = _vault(FakeVaultRows())
    deleted = await vault.tokenize(_VAULT_CARD, client_id=CLIENT_1)
    await vault.delete(deleted.token, client_id=CLIENT_1)
    await _vault_refuses(code, vault.reveal(deleted, client_id=CLIENT_1))
    again = await vault.tokenize(_VAULT_CARD, client_id=CLIENT_1)
    assert await vault.reveal(again, client_id=CLIENT_1) == _VAULT_CARD


@row(ErrorCode.CLIENT_SHREDDED, follows="runs `paygate keys unshred-client`")
async def _client_shredded(make: MakeAdvised, code: ErrorCode) -> None:
    vault = _vault(FakeVaultRows())
    await vault.tokenize(_VAULT_CARD, client_id=CLIENT_1, saved=True)
    assert await vault.delete_client(CLIENT_1) == 1
    for _ in range(2):  # a retry cannot help: the same refusal
        await _vault_refuses(code, vault.tokenize(_VAULT_CARD, client_id=CLIENT_1, saved=True))
    assert await vault.unshred_client(CLIENT_1)
    again = await vault.tokenize(_VAULT_CARD, client_id=CLIENT_1, saved=True)
    assert await vault.reveal(again, client_id=CLIENT_1) == _VAULT_CARD


@row(ErrorCode.ACCOUNT_DATA_TAMPERED, follows="Do not retry")
async def _account_data_tampered(make: MakeAdvised, code: ErrorCode) -> None:
    rows = FakeVaultRows()
    vault = _vault(rows)
    vaulted = await vault.tokenize(_VAULT_CARD, client_id=CLIENT_1)
    entry = rows.entries[vaulted.token]
    rows.entries[vaulted.token] = dataclasses.replace(
        entry, ciphertext=entry.ciphertext[:-1] + bytes([entry.ciphertext[-1] ^ 1])
    )
    for _ in range(2):  # a retry cannot help: the same refusal
        await _vault_refuses(code, vault.reveal(vaulted, client_id=CLIENT_1))


@row(
    ErrorCode.ENCRYPTION_KEY_UNKNOWN,
    ErrorCode.ENCRYPTION_KEY_MISMATCH,
    follows="Configure the",
)
async def _encryption_key(make: MakeAdvised, code: ErrorCode) -> None:
    rows = FakeVaultRows()
    vaulted = await _vault(rows).tokenize(_VAULT_CARD, client_id=CLIENT_1)
    misconfigured = KEK_2 if code is ErrorCode.ENCRYPTION_KEY_UNKNOWN else KEK_1_WRONG
    await _vault_refuses(code, _vault(rows, misconfigured).reveal(vaulted, client_id=CLIENT_1))
    # The right key configured under that id: it opens.
    assert await _vault(rows, KEK_1).reveal(vaulted, client_id=CLIENT_1) == _VAULT_CARD


# --- the table -------------------------------------------------------------------------------


@pytest.fixture
async def make_advised() -> AsyncIterator[MakeAdvised]:
    clients: list[TestClient[Any, Any]] = []

    async def make(**options: Any) -> Advised:
        world = World()
        client = await world_client(world, **options)
        clients.append(client)
        return Advised(client, world)

    yield make
    for client in clients:
        await client.close()


def test_every_code_has_a_row() -> None:
    assert [code for code in ErrorCode if code not in SCENARIOS] == []


@pytest.mark.parametrize("code", list(ErrorCode), ids=str)
async def test_following_the_advice_gets_what_it_promises(
    code: ErrorCode, make_advised: MakeAdvised
) -> None:
    follows, scenario = SCENARIOS[code]
    assert follows in CATALOGUE[code].action, (
        f"the row of {code} follows advice the catalogue does not give: {follows!r}"
    )
    await scenario(make_advised, code)
