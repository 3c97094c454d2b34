"""The Stripe adapter's maps and translations, without a network.

stripe-mock answers every request with the same fixture, so declines, rate limits and
errors are tested here: directly on the maps, and through the real SDK with a fake HTTP
client that answers what Stripe would.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest
import stripe
from aiohttp.client_reqrep import ConnectionKey

from domain.accounts import Account, AccountType
from domain.errors import CATALOGUE, ErrorCategory, ErrorCode, PaygateError
from domain.money import Money
from domain.payments import PaymentMethod
from providers.errors import (
    ProviderError,
    ProviderRateLimitedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from providers.port import ChargeOutcome, ChargeRequest, ChargeStatus
from providers.stripe import StripeProvider
from providers.stripe.transformers import (
    ATTEMPT_KEY_METADATA_KEY,
    CANCELLATION_REASONS,
    CARD_ERROR_CODES,
    DECLINE_CODES,
    EXPIRY_REASONS,
    PAYMENT_INTENT_STATUSES,
    PAYMENT_REQUEST_ID_KEY,
    REQUEST_ERROR_CODES,
    UNKNOWN_DECLINE_CODE,
    StripeAuthenticationError,
    StripeIdempotencyConflictError,
    StripePaymentPendingError,
    StripeRequestRejectedError,
    charge_params,
    error_code_from_stripe,
    error_from_stripe,
    held_for_a_capture_at_once,
    outcome_from_card_error,
    outcome_from_intent,
    outcome_from_search,
    search_query_for,
)
from tests.support.builders import PAYEE_IBAN, SUCCESS_CARD

pytestmark = pytest.mark.unit

NOT_FINAL_STATUSES = ["processing", "requires_action", "requires_confirmation"]


def charge_request(
    payer: Account | None = None, amount: Money | None = None, attempt_key: str = "pay-1-a1"
) -> ChargeRequest:
    return ChargeRequest(
        attempt_key=attempt_key,
        payment_request_id="pay-1",
        amount=amount or Money(1050, "EUR"),
        payment_method=PaymentMethod.CARD,
        payer=payer or Account(AccountType.TOKEN, "pm_card_visa"),
        payee=Account(AccountType.IBAN, PAYEE_IBAN),
    )


def intent(**fields: Any) -> stripe.PaymentIntent:
    values = {"id": "pi_123", "object": "payment_intent", "created": 1, **fields}
    return stripe.PaymentIntent.construct_from(values, "sk_test_unit")


def card_error_body(
    code: str = "card_declined", decline_code: str | None = None, with_intent: bool = True
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "type": "card_error",
        "code": code,
        "message": "Your card was declined.",
    }
    if decline_code is not None:
        error["decline_code"] = decline_code
    if with_intent:
        error["payment_intent"] = {
            "id": "pi_declined",
            "object": "payment_intent",
            "status": "requires_payment_method",
        }
    return {"error": error}


def card_error(**kwargs: Any) -> stripe.CardError:
    body = card_error_body(**kwargs)
    error = body["error"]
    return stripe.CardError(
        error["message"], None, error["code"], json.dumps(body), 402, body, {"request-id": "req_1"}
    )


def caused_by(exc: stripe.StripeError, cause: BaseException | None) -> stripe.StripeError:
    exc.__cause__ = cause
    return exc


def connection_key() -> ConnectionKey:
    return ConnectionKey("127.0.0.1", 1, False, True, None, None, None, None)


# --- the maps ------------------------------------------------------------------------------


@pytest.mark.parametrize(("decline_code", "expected"), sorted(DECLINE_CODES.items()))
def test_every_decline_code_maps(decline_code: str, expected: ErrorCode) -> None:
    assert error_code_from_stripe(decline_code, None) is expected
    # the issuer's reason is more specific than Stripe's generic code
    assert error_code_from_stripe(decline_code, "card_declined") is expected


@pytest.mark.parametrize(("code", "expected"), sorted(CARD_ERROR_CODES.items()))
def test_every_card_error_code_maps(code: str, expected: ErrorCode) -> None:
    assert error_code_from_stripe(None, code) is expected
    assert error_code_from_stripe("a_decline_code_stripe_adds_later", code) is expected


@pytest.mark.parametrize(
    ("decline_code", "code"),
    [(None, None), ("a_new_decline_code", None), (None, "a_new_code"), ("new", "newer")],
)
def test_unknown_codes_are_a_generic_decline(decline_code: str | None, code: str | None) -> None:
    assert error_code_from_stripe(decline_code, code) is UNKNOWN_DECLINE_CODE
    assert UNKNOWN_DECLINE_CODE is ErrorCode.PAYMENT_DECLINED


def test_the_codes_named_by_the_brief() -> None:
    assert DECLINE_CODES["generic_decline"] is ErrorCode.PAYMENT_DECLINED
    assert CARD_ERROR_CODES["card_declined"] is ErrorCode.PAYMENT_DECLINED
    assert DECLINE_CODES["insufficient_funds"] is ErrorCode.INSUFFICIENT_FUNDS
    for fraud in ("fraudulent", "stolen_card", "lost_card"):
        assert DECLINE_CODES[fraud] is ErrorCode.FRAUD_SUSPECTED
    for invalid in ("incorrect_number", "invalid_number", "invalid_account"):
        assert DECLINE_CODES[invalid] is ErrorCode.INVALID_ACCOUNT
    assert CARD_ERROR_CODES["expired_card"] is ErrorCode.PAYMENT_DECLINED


def test_declines_map_only_to_decline_codes_of_the_catalogue() -> None:
    mapped = {
        *DECLINE_CODES.values(),
        *CARD_ERROR_CODES.values(),
        *CANCELLATION_REASONS.values(),
        UNKNOWN_DECLINE_CODE,
    }
    assert {CATALOGUE[code].category for code in mapped} == {ErrorCategory.DECLINED}


@pytest.mark.parametrize(("reason", "expected"), sorted(CANCELLATION_REASONS.items()))
def test_every_cancellation_reason_is_a_released_authorization_with_a_decline(
    reason: str, expected: ErrorCode
) -> None:
    """For a charge, a decline (the error); for an authorization, released: expired when
    Stripe canceled it on its own at the end of the hold, canceled for any other reason."""
    outcome = outcome_from_intent(intent(status="canceled", cancellation_reason=reason))
    released = ChargeStatus.EXPIRED if reason in EXPIRY_REASONS else ChargeStatus.CANCELED
    assert outcome.status is released
    assert outcome.provider_reference == "pi_123"
    assert outcome.error is not None
    assert outcome.error.code is expected


@pytest.mark.parametrize("reason", [None, "a_reason_stripe_adds_later"])
def test_canceled_without_a_known_reason_is_a_generic_decline(reason: str | None) -> None:
    outcome = outcome_from_intent(intent(status="canceled", cancellation_reason=reason))
    assert outcome.status is ChargeStatus.CANCELED
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.PAYMENT_DECLINED


def test_an_automatically_canceled_authorization_is_expired() -> None:
    assert {"automatic", "expired"} == EXPIRY_REASONS
    outcome = outcome_from_intent(intent(status="canceled", cancellation_reason="automatic"))
    assert outcome.status is ChargeStatus.EXPIRED


def test_the_status_map_covers_every_status_the_sdk_knows() -> None:
    annotation = stripe.PaymentIntent.__annotations__["status"]
    literal = next(arg for arg in typing.get_args(annotation) if typing.get_origin(arg))
    assert set(PAYMENT_INTENT_STATUSES) == set(typing.get_args(literal))


# --- PaymentIntent statuses ----------------------------------------------------------------


def test_succeeded_is_a_success_with_the_intent_as_reference() -> None:
    outcome = outcome_from_intent(intent(status="succeeded"))
    assert outcome == ChargeOutcome(ChargeStatus.SUCCEEDED, "pi_123")


@pytest.mark.parametrize(
    ("amount_refunded", "refunded"),
    [(4000, None), (5500, Money(1500, "EUR")), (10000, Money(6000, "EUR"))],
)
def test_the_release_of_a_partial_capture_is_never_read_as_a_refund_of_the_charge(
    amount_refunded: int, refunded: Money | None
) -> None:
    # Stripe counts what a partial capture released in the charge's amount_refunded (10000
    # held, 6000 captured: 4000 "refunded" at once); only the rest was refunded of the capture.
    charge = {
        "id": "ch_123",
        "object": "charge",
        "amount": 10000,
        "amount_captured": 6000,
        "amount_refunded": amount_refunded,
    }
    outcome = outcome_from_intent(
        intent(status="succeeded", amount=10000, currency="eur", latest_charge=charge)
    )
    assert outcome.refunded == refunded


@pytest.mark.parametrize(
    ("decline_code", "code", "expected"),
    [
        ("insufficient_funds", "card_declined", ErrorCode.INSUFFICIENT_FUNDS),
        ("stolen_card", "card_declined", ErrorCode.FRAUD_SUSPECTED),
        (None, "incorrect_number", ErrorCode.INVALID_ACCOUNT),
        (None, "expired_card", ErrorCode.PAYMENT_DECLINED),
        (None, None, ErrorCode.PAYMENT_DECLINED),
    ],
)
def test_requires_payment_method_after_a_decline_is_declined(
    decline_code: str | None, code: str | None, expected: ErrorCode
) -> None:
    last_error = {"type": "card_error", "code": code, "decline_code": decline_code}
    outcome = outcome_from_intent(
        intent(status="requires_payment_method", last_payment_error=last_error)
    )
    assert outcome.status is ChargeStatus.DECLINED
    assert outcome.provider_reference == "pi_123"
    assert outcome.error is not None
    assert outcome.error.code is expected
    assert outcome.error.decline_code == (decline_code or code)


def test_requires_payment_method_without_a_decline_is_not_final() -> None:
    with pytest.raises(StripePaymentPendingError) as caught:
        outcome_from_intent(intent(status="requires_payment_method", last_payment_error=None))
    assert caught.value.outcome_unknown
    assert caught.value.status == "requires_payment_method"


@pytest.mark.parametrize("status", [*NOT_FINAL_STATUSES, "a_status_stripe_adds_later"])
def test_a_status_that_is_not_final_is_an_unknown_outcome_never_a_failure(status: str) -> None:
    with pytest.raises(StripePaymentPendingError) as caught:
        outcome_from_intent(intent(status=status))
    assert isinstance(caught.value, ProviderTimeoutError)
    assert caught.value.outcome_unknown
    assert caught.value.intent_id == "pi_123"
    assert caught.value.status == status


def test_requires_capture_of_a_manual_capture_is_authorized() -> None:
    outcome = outcome_from_intent(intent(status="requires_capture", capture_method="manual"))
    assert outcome == ChargeOutcome(ChargeStatus.AUTHORIZED, "pi_123")


@pytest.mark.parametrize("capture_method", ["automatic", "automatic_async", None])
def test_requires_capture_of_a_capture_at_once_is_an_unknown_outcome(
    capture_method: str | None,
) -> None:
    # paygate sends capture_method=manual only when asked not to capture: held money of a
    # charge asked to capture at once is not what the client asked for, never "authorized".
    fields: dict[str, Any] = {"status": "requires_capture"}
    if capture_method is not None:
        fields["capture_method"] = capture_method
    with pytest.raises(StripePaymentPendingError) as caught:
        outcome_from_intent(intent(**fields))
    assert caught.value.outcome_unknown
    assert (caught.value.intent_id, caught.value.status) == ("pi_123", "requires_capture")
    # Named as a hold: the stray-charge sweep voids one the payment does not stand on.
    assert caught.value.held_reference == "pi_123"


@pytest.mark.parametrize("status", ["processing", "requires_action", "requires_confirmation"])
def test_another_status_not_final_names_no_hold(status: str) -> None:
    with pytest.raises(StripePaymentPendingError) as caught:
        outcome_from_intent(intent(status=status, capture_method="automatic_async"))
    assert caught.value.held_reference is None


def test_only_a_waiting_capture_at_once_is_held_for_a_capture_at_once() -> None:
    assert held_for_a_capture_at_once(intent(status="requires_capture", capture_method="automatic"))
    assert not held_for_a_capture_at_once(
        intent(status="requires_capture", capture_method="manual")
    )
    assert not held_for_a_capture_at_once(intent(status="succeeded", capture_method="automatic"))


def test_a_search_finding_a_capture_at_once_held_is_an_unknown_outcome() -> None:
    # The reconciler's, the stray sweep's and the settlement command's read.
    with pytest.raises(StripePaymentPendingError):
        outcome_from_search([intent(status="requires_capture", capture_method="automatic_async")])


def test_every_sdk_status_has_a_tested_meaning() -> None:
    tested = {
        "succeeded",
        "canceled",
        "requires_payment_method",
        "requires_capture",
        *NOT_FINAL_STATUSES,
    }
    assert tested == set(PAYMENT_INTENT_STATUSES)


@pytest.mark.parametrize("missing", ["id", "status"])
def test_an_intent_without_id_or_status_is_unreadable(missing: str) -> None:
    values = {"id": "pi_123", "status": "succeeded"}
    del values[missing]
    with pytest.raises(ValueError, match=missing):
        outcome_from_intent(stripe.PaymentIntent.construct_from(values, "sk_test_unit"))


def test_search_with_no_intent_means_never_received() -> None:
    assert outcome_from_search([]) is None


def test_search_prefers_a_succeeded_intent_then_the_newest() -> None:
    declined = {"type": "card_error", "code": "card_declined"}
    old_success = intent(id="pi_old", created=1, status="succeeded")
    new_decline = intent(
        id="pi_new", created=2, status="requires_payment_method", last_payment_error=declined
    )
    assert outcome_from_search([new_decline, old_success]).provider_reference == "pi_old"  # type: ignore[union-attr]
    older_decline = intent(
        id="pi_older", created=0, status="requires_payment_method", last_payment_error=declined
    )
    assert outcome_from_search([older_decline, new_decline]).provider_reference == "pi_new"  # type: ignore[union-attr]


# --- the request ---------------------------------------------------------------------------


def test_charge_params_create_and_confirm_one_payment_intent() -> None:
    params = charge_params(charge_request(amount=Money(1050, "EUR")))
    assert params == {
        "amount": 1050,
        "currency": "eur",
        "payment_method": "pm_card_visa",
        "confirm": True,
        "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
        "metadata": {PAYMENT_REQUEST_ID_KEY: "pay-1", ATTEMPT_KEY_METADATA_KEY: "pay-1-a1"},
    }


@pytest.mark.parametrize("account_type", [t for t in AccountType if t is not AccountType.TOKEN])
def test_only_stripe_payment_methods_can_be_charged(account_type: AccountType) -> None:
    with pytest.raises(PaygateError) as caught:
        charge_params(charge_request(payer=Account(account_type, SUCCESS_CARD)))
    assert caught.value.code is ErrorCode.INVALID_ACCOUNT
    assert caught.value.param == "payerAccount.type"
    assert "4242" not in caught.value.message


@pytest.mark.parametrize(
    ("attempt_key", "query"),
    [
        ("pay-1-a1", "metadata['paygateAttemptKey']:'pay-1-a1'"),
        ("it's", "metadata['paygateAttemptKey']:'it\\'s'"),
        ("back\\slash", "metadata['paygateAttemptKey']:'back\\\\slash'"),
    ],
)
def test_search_query_quotes_the_attempt_key(attempt_key: str, query: str) -> None:
    assert search_query_for(attempt_key) == query


# --- SDK exceptions ------------------------------------------------------------------------


def test_a_card_error_is_a_declined_outcome_naming_its_payment_intent() -> None:
    outcome = outcome_from_card_error(card_error(decline_code="insufficient_funds"))
    assert outcome.status is ChargeStatus.DECLINED
    assert outcome.provider_reference == "pi_declined"
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.INSUFFICIENT_FUNDS
    assert outcome.error.decline_code == "insufficient_funds"
    assert outcome.error.message == "Your card was declined."


def test_a_card_error_without_a_payment_intent_has_no_reference() -> None:
    outcome = outcome_from_card_error(card_error(code="expired_card", with_intent=False))
    assert outcome.provider_reference is None
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.PAYMENT_DECLINED
    assert outcome.error.decline_code == "expired_card"


@pytest.mark.parametrize(
    "cause",
    [
        aiohttp.ClientConnectorError(connection_key(), ConnectionRefusedError(111, "refused")),
        aiohttp.ClientConnectorDNSError(connection_key(), OSError("no such host")),
        aiohttp.ConnectionTimeoutError("connect timed out"),
    ],
    ids=["refused", "dns", "connect-timeout"],
)
def test_a_connection_never_made_is_unavailable_not_charged(cause: Exception) -> None:
    exc = caused_by(stripe.APIConnectionError("network error", should_retry=True), cause)
    ours = error_from_stripe(exc)
    assert type(ours) is ProviderUnavailableError
    assert ours.retriable
    assert not ours.outcome_unknown


@pytest.mark.parametrize(
    "cause",
    [
        aiohttp.ServerDisconnectedError(),
        aiohttp.SocketTimeoutError("read timed out"),
        aiohttp.ClientOSError(104, "connection reset"),
        TimeoutError(),
        None,
    ],
    ids=["disconnected", "read-timeout", "reset", "total-timeout", "no-cause"],
)
def test_a_connection_lost_after_sending_is_an_unknown_outcome(cause: Exception | None) -> None:
    exc = caused_by(stripe.APIConnectionError("network error"), cause)
    ours = error_from_stripe(exc)
    assert type(ours) is ProviderTimeoutError
    assert ours.outcome_unknown


@pytest.mark.parametrize(("header", "expected"), [("2", 2.0), ("soon", None), (None, None)])
def test_rate_limit_carries_retry_after(header: str | None, expected: float | None) -> None:
    headers = {"retry-after": header} if header is not None else {}
    ours = error_from_stripe(stripe.RateLimitError("slow down", None, 429, None, headers))
    assert isinstance(ours, ProviderRateLimitedError)
    assert ours.retriable
    assert ours.retry_after == expected


@pytest.mark.parametrize(
    "exc",
    [
        stripe.AuthenticationError("Invalid API Key provided", None, 401),
        stripe.PermissionError("restricted key", None, 403),
    ],
    ids=["401", "403"],
)
def test_refused_credentials_are_unavailable_and_not_retriable(exc: stripe.StripeError) -> None:
    ours = error_from_stripe(exc)
    assert isinstance(ours, StripeAuthenticationError)
    assert isinstance(ours, ProviderUnavailableError)
    assert not ours.retriable
    assert not ours.outcome_unknown
    assert ours.code is ErrorCode.PROVIDER_UNAVAILABLE


def test_an_idempotency_conflict_is_an_unknown_outcome() -> None:
    exc = stripe.IdempotencyError("Keys for idempotent requests ...", None, 400)
    ours = error_from_stripe(exc)
    assert isinstance(ours, StripeIdempotencyConflictError)
    assert ours.outcome_unknown
    assert ours.code is ErrorCode.IDEMPOTENCY_CONFLICT


def test_an_unknown_payment_method_is_the_payers_invalid_account() -> None:
    exc = stripe.InvalidRequestError("No such PaymentMethod", "payment_method", "resource_missing")
    ours = error_from_stripe(exc)
    assert isinstance(ours, PaygateError)
    assert ours.code is ErrorCode.INVALID_ACCOUNT


@pytest.mark.parametrize(("code", "expected"), sorted(REQUEST_ERROR_CODES.items()))
def test_every_request_error_code_maps(code: str, expected: ErrorCode) -> None:
    ours = error_from_stripe(stripe.InvalidRequestError("Amount must be ...", "amount", code))
    assert isinstance(ours, PaygateError)
    assert ours.code is expected


@pytest.mark.parametrize("code", ["parameter_unknown", None])
def test_another_invalid_request_is_rejected_not_retriable(code: str | None) -> None:
    ours = error_from_stripe(stripe.InvalidRequestError("Received unknown parameter", "x", code))
    assert isinstance(ours, StripeRequestRejectedError)
    assert not ours.retriable
    assert not ours.outcome_unknown


@pytest.mark.parametrize(
    "exc",
    [
        stripe.APIError("internal", None, 500),
        stripe.APIError("bad gateway", None, 502),
        stripe.APIError("unavailable", None, 503),
        stripe.APIError("key in use by a request in progress", None, 409),
        stripe.APIError("Invalid response body from API", None, 200),
        card_error(),  # only a charge reads a card error as a decline
        stripe.StripeError("an error class the SDK adds later"),
    ],
    ids=["500", "502", "503", "409", "unreadable", "card-error-elsewhere", "other"],
)
def test_any_other_stripe_error_is_an_unknown_outcome(exc: stripe.StripeError) -> None:
    ours = error_from_stripe(exc)
    assert type(ours) is ProviderTimeoutError
    assert ours.outcome_unknown


# --- through the real SDK, with a fake HTTP client -----------------------------------------


class FakeStripeHttp(stripe.HTTPClient):
    """Answers each request with the next canned (status, body); records what was sent."""

    name = "fake"

    def __init__(self, *answers: tuple[int, Mapping[str, Any]]) -> None:
        super().__init__()
        self.answers = list(answers)
        self.requests: list[tuple[str, str, Mapping[str, str], Any]] = []

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        self.requests.append((method, url, dict(headers), post_data))
        status, body = self.answers.pop(0)
        return json.dumps(body).encode(), status, {"request-id": "req_fake"}


async def provider_answering(
    *answers: tuple[int, Mapping[str, Any]],
) -> tuple[StripeProvider, FakeStripeHttp]:
    http = FakeStripeHttp(*answers)
    provider = StripeProvider("sk_test_unit", http_client=http)
    await provider.start()
    return provider, http


def intent_body(**fields: Any) -> dict[str, Any]:
    """A PaymentIntent for the amount charge_request asks by default, as Stripe restates it."""
    return {
        "id": "pi_fake",
        "object": "payment_intent",
        "created": 1,
        "amount": 1050,
        "currency": "eur",
        **fields,
    }


async def test_charge_sends_the_attempt_key_as_idempotency_key() -> None:
    provider, http = await provider_answering((200, intent_body(status="succeeded")))
    outcome = await provider.charge(charge_request(attempt_key="pay-9-a2"))
    assert outcome == ChargeOutcome(ChargeStatus.SUCCEEDED, "pi_fake")
    method, url, headers, body = http.requests[0]
    assert (method, url) == ("post", "https://api.stripe.com/v1/payment_intents")
    assert headers["Idempotency-Key"] == "pay-9-a2"
    assert "confirm=true" in body
    assert "metadata[paygateAttemptKey]=pay-9-a2" in body


@pytest.mark.parametrize(
    ("decline_code", "expected"),
    [
        ("generic_decline", ErrorCode.PAYMENT_DECLINED),
        ("insufficient_funds", ErrorCode.INSUFFICIENT_FUNDS),
        ("fraudulent", ErrorCode.FRAUD_SUSPECTED),
        ("invalid_account", ErrorCode.INVALID_ACCOUNT),
    ],
)
async def test_a_402_from_stripe_is_a_declined_outcome(
    decline_code: str, expected: ErrorCode
) -> None:
    provider, _ = await provider_answering((402, card_error_body(decline_code=decline_code)))
    outcome = await provider.charge(charge_request())
    assert outcome.status is ChargeStatus.DECLINED
    assert outcome.provider_reference == "pi_declined"
    assert outcome.error is not None
    assert outcome.error.code is expected


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (429, {"type": "invalid_request_error", "code": "rate_limit"}, ProviderRateLimitedError),
        (401, {"type": "invalid_request_error"}, StripeAuthenticationError),
        (403, {"type": "invalid_request_error"}, StripeAuthenticationError),
        (400, {"type": "idempotency_error"}, StripeIdempotencyConflictError),
        (400, {"type": "invalid_request_error", "param": "foo"}, StripeRequestRejectedError),
        (
            409,
            {"type": "invalid_request_error", "code": "idempotency_key_in_use"},
            ProviderTimeoutError,
        ),
        (500, {"type": "api_error"}, ProviderTimeoutError),
    ],
)
async def test_an_error_answer_is_translated_from_the_sdk_exception(
    status: int, error: dict[str, Any], expected: type[ProviderError]
) -> None:
    provider, _ = await provider_answering((status, {"error": {"message": "no", **error}}))
    with pytest.raises(expected) as caught:
        await provider.charge(charge_request())
    assert type(caught.value) is expected
    assert isinstance(caught.value.__cause__, stripe.StripeError)


async def test_an_unknown_payment_method_fails_as_invalid_account() -> None:
    body = {
        "error": {
            "type": "invalid_request_error",
            "code": "resource_missing",
            "param": "payment_method",
            "message": "No such PaymentMethod: 'pm_x'",
        }
    }
    provider, _ = await provider_answering((400, body))
    with pytest.raises(PaygateError) as caught:
        await provider.charge(charge_request(payer=Account(AccountType.TOKEN, "pm_unknown")))
    assert caught.value.code is ErrorCode.INVALID_ACCOUNT


async def test_a_charge_still_processing_is_an_unknown_outcome() -> None:
    provider, _ = await provider_answering((200, intent_body(status="processing")))
    with pytest.raises(StripePaymentPendingError):
        await provider.charge(charge_request())


async def test_a_charge_asked_to_capture_but_only_authorized_is_an_unknown_outcome() -> None:
    provider, _ = await provider_answering((200, intent_body(status="requires_capture")))
    with pytest.raises(StripePaymentPendingError) as caught:
        await provider.charge(charge_request())
    assert caught.value.status == "requires_capture"


async def test_every_read_of_a_capture_at_once_held_agrees_with_the_charge_call() -> None:
    held = intent_body(status="requires_capture", capture_method="automatic_async")
    search = {"object": "search_result", "data": [held], "has_more": False, "url": "/search"}
    provider, _ = await provider_answering((200, held), (200, search), (200, held))
    with pytest.raises(StripePaymentPendingError):
        await provider.charge(charge_request())
    with pytest.raises(StripePaymentPendingError):
        await provider.charge_status("pay-1-a1")
    with pytest.raises(StripePaymentPendingError):
        await provider.charge_by_reference("pi_fake")


async def test_an_answer_without_a_status_is_an_unknown_outcome() -> None:
    provider, _ = await provider_answering((200, {"id": "pi_fake", "object": "payment_intent"}))
    with pytest.raises(ProviderTimeoutError, match="unreadable"):
        await provider.charge(charge_request())


async def test_a_payer_that_is_not_a_stripe_payment_method_is_refused_before_any_call() -> None:
    provider, http = await provider_answering()
    with pytest.raises(PaygateError) as caught:
        await provider.charge(charge_request(payer=Account(AccountType.CARD, SUCCESS_CARD)))
    assert caught.value.code is ErrorCode.INVALID_ACCOUNT
    assert http.requests == []


async def test_charge_status_searches_by_attempt_key() -> None:
    found = {
        "object": "search_result",
        "data": [intent_body(status="succeeded")],
        "has_more": False,
    }
    provider, http = await provider_answering((200, found))
    outcome = await provider.charge_status("pay-1-a1")
    assert outcome == ChargeOutcome(ChargeStatus.SUCCEEDED, "pi_fake")
    method, url, _, _ = http.requests[0]
    assert method == "get"
    assert url.startswith("https://api.stripe.com/v1/payment_intents/search?")
    assert "pay-1-a1" in url


async def test_charge_status_is_none_when_search_finds_nothing() -> None:
    empty = {"object": "search_result", "data": [], "has_more": False}
    provider, _ = await provider_answering((200, empty))
    assert await provider.charge_status("pay-1-a1") is None


async def test_a_provider_not_started_refuses_to_charge() -> None:
    provider = StripeProvider("sk_test_unit", http_client=FakeStripeHttp())
    with pytest.raises(RuntimeError, match="start"):
        await provider.charge(charge_request())
