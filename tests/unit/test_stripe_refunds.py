"""Stripe refunds, authorize/capture and retrieve by reference: maps entry by entry, and
the adapter through the real SDK with a fake HTTP client (what stripe-mock cannot show)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

import pytest
import stripe

from domain.accounts import Account, AccountType
from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.payments import PaymentMethod
from domain.refunds import RefundReason
from providers.errors import ProviderTimeoutError, ProviderUnavailableError
from providers.port import (
    CaptureRequest,
    ChargeRequest,
    ChargeStatus,
    ProviderRefundStatus,
    RefundRequest,
)
from providers.stripe import StripeProvider
from providers.stripe.refund_transformers import (
    REFUND_KEY_METADATA_KEY,
    REFUND_REASONS,
    REFUND_REQUEST_ERROR_CODES,
    REFUND_STATUSES,
    UNKNOWN_REFUND_STATUS,
    find_refund,
    outcome_from_refund,
    refund_error_from_stripe,
    refund_params,
)
from providers.stripe.transformers import charge_params
from tests.support.builders import PAYEE_IBAN

pytestmark = pytest.mark.unit

# Refund.status is a plain str in the SDK; these are the values its docstring lists.
DOCUMENTED_REFUND_STATUSES = {"pending", "requires_action", "succeeded", "failed", "canceled"}


def refund_request(reason: RefundReason | None = None, amount: int = 500) -> RefundRequest:
    return RefundRequest(
        refund_key="pay-1-refund-k1",
        refund_id="ref_0123",
        payment_request_id="pay-1",
        charge_reference="pi_123",
        amount=Money(amount, "EUR"),
        reason=reason,
    )


def refund(**fields: Any) -> stripe.Refund:
    values = {"id": "re_123", "object": "refund", **fields}
    return stripe.Refund.construct_from(values, "sk_test_unit")


# --- maps ------------------------------------------------------------------------------------


def test_the_refund_status_map_covers_every_documented_status() -> None:
    assert set(REFUND_STATUSES) == DOCUMENTED_REFUND_STATUSES


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("succeeded", ProviderRefundStatus.SUCCEEDED),
        ("pending", ProviderRefundStatus.PENDING),
        ("requires_action", ProviderRefundStatus.PENDING),
        ("failed", ProviderRefundStatus.FAILED),
        ("canceled", ProviderRefundStatus.FAILED),
        ("a_status_stripe_adds_later", UNKNOWN_REFUND_STATUS),
        (None, UNKNOWN_REFUND_STATUS),
    ],
)
def test_every_refund_status_maps(status: str | None, expected: ProviderRefundStatus) -> None:
    outcome = outcome_from_refund(refund(status=status, failure_reason="declined"))
    assert outcome.status is expected
    assert outcome.provider_reference == "re_123"
    if expected is ProviderRefundStatus.FAILED:
        assert outcome.error is not None
        assert outcome.error.code is ErrorCode.REFUND_FAILED
        assert outcome.error.decline_code == "declined"
    else:
        assert outcome.error is None


def test_an_unknown_status_is_pending_never_failed() -> None:
    assert UNKNOWN_REFUND_STATUS is ProviderRefundStatus.PENDING


def test_a_canceled_refund_without_a_reason_still_fails_with_a_message() -> None:
    outcome = outcome_from_refund(refund(status="canceled"))
    assert outcome.error is not None
    assert outcome.error.decline_code is None
    assert "canceled" in outcome.error.message


def test_a_refund_without_an_id_is_unreadable() -> None:
    with pytest.raises(ValueError, match="id"):
        outcome_from_refund(stripe.Refund.construct_from({"status": "succeeded"}, "sk"))


@pytest.mark.parametrize(
    ("reason", "sent"),
    [
        (RefundReason.REQUESTED_BY_CUSTOMER, "requested_by_customer"),
        (RefundReason.DUPLICATE, "duplicate"),
        (RefundReason.FRAUDULENT, "fraudulent"),
        (RefundReason.OTHER, None),
        (None, None),
    ],
)
def test_refund_params(reason: RefundReason | None, sent: str | None) -> None:
    assert set(REFUND_REASONS) == set(RefundReason)
    params = refund_params(refund_request(reason, amount=1234))
    assert params.get("reason") == sent
    assert params["payment_intent"] == "pi_123"
    assert params["amount"] == 1234
    assert params["metadata"] == {
        "paygateRefundKey": "pay-1-refund-k1",
        "paygateRefundId": "ref_0123",
        "paymentRequestId": "pay-1",
    }


def test_find_refund_matches_the_refund_key_in_metadata() -> None:
    mine = refund(id="re_mine", metadata={REFUND_KEY_METADATA_KEY: "k1"})
    others = [refund(id="re_a", metadata={}), refund(id="re_b", metadata=None)]
    assert find_refund([*others, mine], "k1") is mine
    assert find_refund(others, "k1") is None


@pytest.mark.parametrize(("code", "expected"), sorted(REFUND_REQUEST_ERROR_CODES.items()))
def test_every_refund_request_error_code_maps(code: str, expected: ErrorCode) -> None:
    error = refund_error_from_stripe(stripe.InvalidRequestError("no", "amount", code=code))
    assert isinstance(error, PaygateError)
    assert error.code is expected


def test_other_refund_errors_translate_like_charge_errors() -> None:
    assert isinstance(
        refund_error_from_stripe(stripe.APIError("boom", http_status=500)), ProviderTimeoutError
    )
    assert isinstance(
        refund_error_from_stripe(stripe.RateLimitError("slow", http_status=429)),
        ProviderUnavailableError,
    )


def test_authorize_only_asks_for_manual_capture_and_capture_leaves_the_request_as_it_was() -> None:
    def request(capture: bool) -> ChargeRequest:
        return ChargeRequest(
            attempt_key="pay-1-a1",
            payment_request_id="pay-1",
            amount=Money(1050, "EUR"),
            payment_method=PaymentMethod.CARD,
            payer=Account(AccountType.TOKEN, "pm_card_visa"),
            payee=Account(AccountType.IBAN, PAYEE_IBAN),
            capture=capture,
        )

    assert charge_params(request(False))["capture_method"] == "manual"
    assert "capture_method" not in charge_params(request(True))


# --- through the real SDK, with a fake HTTP client -------------------------------------------


class FakeStripeHttp(stripe.HTTPClient):
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


async def answering(*answers: tuple[int, Mapping[str, Any]]) -> tuple[StripeProvider, Any]:
    http = FakeStripeHttp(*answers)
    provider = StripeProvider("sk_test_unit", http_client=http)
    await provider.start()
    return provider, http


def refund_body(**fields: Any) -> dict[str, Any]:
    """A Refund of the amount refund_request asks by default, as Stripe restates it."""
    return {
        "id": "re_fake",
        "object": "refund",
        "status": "succeeded",
        "amount": 500,
        "currency": "eur",
        **fields,
    }


def error_body(code: str, status_type: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"type": status_type, "code": code, "message": "Stripe says no"}}


async def test_refund_sends_the_refund_key_as_idempotency_key() -> None:
    provider, http = await answering((200, refund_body()))
    outcome = await provider.refund(refund_request(RefundReason.DUPLICATE))
    assert outcome.status is ProviderRefundStatus.SUCCEEDED
    assert outcome.provider_reference == "re_fake"
    method, url, headers, body = http.requests[0]
    assert (method, url) == ("post", "https://api.stripe.com/v1/refunds")
    assert headers["Idempotency-Key"] == "pay-1-refund-k1"
    sent = parse_qs(body)
    assert sent["payment_intent"] == ["pi_123"]
    assert sent["amount"] == ["500"]
    assert sent["reason"] == ["duplicate"]
    assert sent["metadata[paygateRefundKey]"] == ["pay-1-refund-k1"]


async def test_a_failed_refund_is_an_outcome_with_refund_failed() -> None:
    provider, _ = await answering((200, refund_body(status="failed", failure_reason="unknown")))
    outcome = await provider.refund(refund_request())
    assert outcome.status is ProviderRefundStatus.FAILED
    assert outcome.error is not None
    assert (outcome.error.code, outcome.error.decline_code) == (ErrorCode.REFUND_FAILED, "unknown")


async def test_a_refund_above_what_remains_is_refused_with_a_catalogue_code() -> None:
    provider, _ = await answering((400, error_body("charge_already_refunded")))
    with pytest.raises(PaygateError) as caught:
        await provider.refund(refund_request())
    assert caught.value.code is ErrorCode.REFUND_EXCEEDS_CAPTURED
    assert isinstance(caught.value.__cause__, stripe.InvalidRequestError)


async def test_refund_status_lists_the_intents_refunds_and_matches_the_key() -> None:
    listing = {
        "object": "list",
        "url": "/v1/refunds",
        "has_more": False,
        "data": [
            refund_body(id="re_other", metadata={REFUND_KEY_METADATA_KEY: "other"}),
            refund_body(id="re_mine", status="pending", metadata={REFUND_KEY_METADATA_KEY: "k1"}),
        ],
    }
    provider, http = await answering((200, listing), (200, listing))
    outcome = await provider.refund_status("k1", "pi_123")
    assert outcome is not None
    assert (outcome.status, outcome.provider_reference) == (
        ProviderRefundStatus.PENDING,
        "re_mine",
    )
    method, url, _, _ = http.requests[0]
    assert method == "get"
    assert url.startswith("https://api.stripe.com/v1/refunds?")
    assert parse_qs(url.split("?", 1)[1])["payment_intent"] == ["pi_123"]
    assert await provider.refund_status("k-never", "pi_123") is None


async def test_capture_sends_amount_to_capture_and_the_capture_key() -> None:
    provider, http = await answering(
        (200, {"id": "pi_123", "object": "payment_intent", "status": "succeeded"})
    )
    request = CaptureRequest(
        capture_key="pay-1-capture",
        payment_request_id="pay-1",
        charge_reference="pi_123",
        amount=Money(700, "EUR"),
    )
    outcome = await provider.capture(request)
    assert (outcome.status, outcome.provider_reference) == (ChargeStatus.SUCCEEDED, "pi_123")
    method, url, headers, body = http.requests[0]
    assert (method, url) == ("post", "https://api.stripe.com/v1/payment_intents/pi_123/capture")
    assert headers["Idempotency-Key"] == "pay-1-capture"
    assert parse_qs(body)["amount_to_capture"] == ["700"]


def _charge(amount_refunded: int) -> dict[str, Any]:
    """The PaymentIntent's charge as Stripe expands it: held and captured 60.00."""
    return {
        "id": "ch_1",
        "object": "charge",
        "amount": 6000,
        "amount_captured": 6000,
        "amount_refunded": amount_refunded,
    }


@pytest.mark.parametrize(
    ("latest_charge", "refunded"),
    [
        (_charge(amount_refunded=1500), Money(1500, "EUR")),
        (_charge(amount_refunded=0), None),
        # Not readable without what the charge held and captured: not said.
        ({"id": "ch_1", "object": "charge", "amount_refunded": 1500}, None),
        ("ch_1", None),  # not expanded: not said
    ],
    ids=["refunded", "nothing-refunded", "amounts-unsaid", "not-expanded"],
)
async def test_charge_by_reference_reads_the_charges_amount_refunded(
    latest_charge: Any, refunded: Money | None
) -> None:
    intent = {
        "id": "pi_123",
        "object": "payment_intent",
        "status": "succeeded",
        "amount": 6000,
        "amount_received": 6000,
        "currency": "eur",
        "latest_charge": latest_charge,
    }
    provider, http = await answering((200, intent))
    outcome = await provider.charge_by_reference("pi_123")
    assert outcome is not None
    assert (outcome.status, outcome.captured, outcome.refunded) == (
        ChargeStatus.SUCCEEDED,
        Money(6000, "EUR"),
        refunded,
    )
    # Asked with the charge expanded: the PaymentIntent itself does not say what was refunded.
    assert "expand" in http.requests[0][1]


async def test_charge_by_reference_retrieves_the_intent_and_unknown_is_none() -> None:
    provider, http = await answering(
        (
            200,
            {
                "id": "pi_123",
                "object": "payment_intent",
                "status": "requires_capture",
                "capture_method": "manual",
            },
        ),
        (404, error_body("resource_missing")),
        (400, error_body("parameter_invalid_empty")),
    )
    outcome = await provider.charge_by_reference("pi_123")
    assert outcome is not None
    assert outcome.status is ChargeStatus.AUTHORIZED
    # The charge expanded: its amount_refunded says what was refunded (by hand, too).
    assert http.requests[0][:2] == (
        "get",
        "https://api.stripe.com/v1/payment_intents/pi_123?expand[0]=latest_charge",
    )
    assert await provider.charge_by_reference("pi_unknown") is None
    with pytest.raises(Exception) as caught:  # noqa: PT011
        await provider.charge_by_reference("pi_bad")
    assert not isinstance(caught.value, stripe.StripeError)
