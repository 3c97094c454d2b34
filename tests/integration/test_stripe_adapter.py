"""The Stripe adapter against stripe-mock, Stripe's official API mock, over loopback HTTP.

stripe-mock checks each request against Stripe's OpenAPI spec, but it is stateless and
answers from fixtures (here: a succeeded PaymentIntent, see tests/support/stripe_mock.py),
whatever the card. Declines, rate limits and Stripe's error answers can therefore only be
tested in tests/unit/test_stripe_transformers.py, through the SDK with a fake HTTP client.
"""

from __future__ import annotations

import dataclasses
import socket
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest
import stripe

from domain.accounts import Account, AccountType
from domain.money import Money
from domain.payments import PaymentMethod
from domain.refunds import RefundReason
from providers.errors import ProviderUnavailableError
from providers.port import (
    CaptureRequest,
    ChargeRequest,
    ChargeStatus,
    ProviderRefundStatus,
    RefundRequest,
)
from providers.stripe import StripeProvider
from tests.support.builders import PAYEE_IBAN
from tests.support.stripe_mock import SUCCEEDED_FIXTURES, TEST_API_KEY, run_stripe_mock

pytestmark = pytest.mark.integration


class RecordingHttp(stripe.AIOHTTPClient):
    """The SDK's own aiohttp client, recording request and response headers."""

    def __init__(self) -> None:
        super().__init__(timeout=5)
        self.sent: list[tuple[str, str, Mapping[str, str]]] = []
        self.answered: list[Mapping[str, str]] = []

    async def request_stream_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> Any:
        self.sent.append((method, url, dict(headers)))
        content, status, response_headers = await super().request_stream_async(
            method, url, headers, post_data
        )
        self.answered.append(dict(response_headers))
        return content, status, response_headers


def charge_request(attempt_key: str | None = None) -> ChargeRequest:
    payment_id = f"pay-{uuid.uuid4().hex[:12]}"
    return ChargeRequest(
        attempt_key=attempt_key or f"{payment_id}-a1",
        payment_request_id=payment_id,
        amount=Money(1050, "EUR"),
        payment_method=PaymentMethod.CARD,
        payer=Account(AccountType.TOKEN, "pm_card_visa"),
        payee=Account(AccountType.IBAN, PAYEE_IBAN),
    )


def unused_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def provider(stripe_mock_url: str) -> AsyncIterator[StripeProvider]:
    """Stripe against stripe-mock, not the sandbox: this file tests the Stripe adapter."""
    async with StripeProvider(TEST_API_KEY, api_base=stripe_mock_url, timeout_s=5) as started:
        yield started


@pytest.fixture
async def recorded(stripe_mock_url: str) -> AsyncIterator[tuple[StripeProvider, RecordingHttp]]:
    http = RecordingHttp()
    provider = StripeProvider(TEST_API_KEY, api_base=stripe_mock_url, http_client=http)
    await provider.start()
    yield provider, http
    await provider.stop()
    await http.close_async()


async def test_a_charge_of_pm_card_visa_succeeds_with_a_payment_intent(
    provider: StripeProvider,
) -> None:
    outcome = await provider.charge(charge_request())
    assert outcome.status is ChargeStatus.SUCCEEDED
    assert outcome.provider_reference is not None
    assert outcome.provider_reference.startswith("pi_")
    assert outcome.error is None


async def test_the_attempt_key_is_sent_as_stripes_idempotency_key(
    recorded: tuple[StripeProvider, RecordingHttp], stripe_mock_url: str
) -> None:
    provider, http = recorded
    request = charge_request()
    await provider.charge(request)
    method, url, headers = http.sent[-1]
    assert (method, url) == ("post", f"{stripe_mock_url}/v1/payment_intents")
    assert headers["Idempotency-Key"] == request.attempt_key
    # stripe-mock echoes the key, as Stripe does
    assert http.answered[-1]["Idempotency-Key"] == request.attempt_key


async def test_charge_status_finds_the_attempt_by_its_key(
    recorded: tuple[StripeProvider, RecordingHttp], stripe_mock_url: str
) -> None:
    provider, http = recorded
    request = charge_request()
    await provider.charge(request)
    outcome = await provider.charge_status(request.attempt_key)
    # stripe-mock does not store the PaymentIntent: it answers the search with its fixture,
    # so this checks the query is accepted and the answer read, not that the ids match.
    assert outcome is not None
    assert outcome.status is ChargeStatus.SUCCEEDED
    assert outcome.provider_reference is not None
    assert outcome.provider_reference.startswith("pi_")
    method, url, _ = http.sent[-1]
    assert method == "get"
    assert url.startswith(f"{stripe_mock_url}/v1/payment_intents/search?")
    assert request.attempt_key in url


async def test_an_unreachable_api_is_unavailable_and_not_charged() -> None:
    api_base = f"http://127.0.0.1:{unused_loopback_port()}"
    async with StripeProvider(TEST_API_KEY, api_base=api_base, timeout_s=5) as provider:
        with pytest.raises(ProviderUnavailableError) as caught:
            await provider.charge(charge_request())
        assert not caught.value.outcome_unknown
        assert isinstance(caught.value.__cause__, stripe.APIConnectionError)
        with pytest.raises(ProviderUnavailableError):
            await provider.charge_status("pay-1-a1")


async def test_stop_is_safe_twice_and_start_again_works(stripe_mock_url: str) -> None:
    provider = StripeProvider(TEST_API_KEY, api_base=stripe_mock_url, timeout_s=5)
    await provider.stop()  # never started
    await provider.start()
    await provider.start()  # idempotent
    assert (await provider.charge(charge_request())).status is ChargeStatus.SUCCEEDED
    await provider.stop()
    await provider.stop()
    with pytest.raises(RuntimeError, match="start"):
        await provider.charge(charge_request())
    await provider.start()
    assert (await provider.charge(charge_request())).status is ChargeStatus.SUCCEEDED
    await provider.stop()


# --- refunds, authorize/capture, retrieve by reference ---------------------------------------
# stripe-mock checks each request against Stripe's OpenAPI spec and answers from fixtures: a
# well-formed call is accepted and its answer parses; statuses and refusals are unit-tested
# (tests/unit/test_stripe_refunds.py). Given fixtures replace all the bundled ones, so the
# refund tests run their own stripe-mock whose fixtures hold a Refund too.

SUCCEEDED_REFUND: Mapping[str, Any] = {
    "id": "re_3PaygateMockSucceeded",
    "object": "refund",
    "amount": 500,
    "balance_transaction": None,
    "charge": "ch_3PaygateMockSucceeded",
    "created": 1234567890,
    "currency": "eur",
    "metadata": {},
    "payment_intent": "pi_3PaygateMockSucceeded",
    "reason": None,
    "receipt_number": None,
    "source_transfer_reversal": None,
    "status": "succeeded",
    "transfer_reversal": None,
}


@pytest.fixture(scope="module")
def stripe_mock_with_refunds_url() -> Iterator[str]:
    resources = {**SUCCEEDED_FIXTURES["resources"], "refund": SUCCEEDED_REFUND}
    with run_stripe_mock({"resources": resources}) as url:
        yield url


@pytest.fixture
async def refunds_recorded(
    stripe_mock_with_refunds_url: str,
) -> AsyncIterator[tuple[StripeProvider, RecordingHttp]]:
    http = RecordingHttp()
    provider = StripeProvider(TEST_API_KEY, api_base=stripe_mock_with_refunds_url, http_client=http)
    await provider.start()
    yield provider, http
    await provider.stop()
    await http.close_async()


def refund_request(reason: RefundReason | None = RefundReason.REQUESTED_BY_CUSTOMER):
    return RefundRequest(
        refund_key=f"pay-{uuid.uuid4().hex[:12]}-refund-1",
        refund_id=f"ref_{uuid.uuid4().hex}",
        payment_request_id="pay-1",
        charge_reference="pi_123",
        amount=Money(500, "EUR"),
        reason=reason,
    )


@pytest.mark.parametrize("reason", [RefundReason.FRAUDULENT, RefundReason.OTHER, None])
async def test_a_refund_is_accepted_with_the_refund_key_as_idempotency_key(
    refunds_recorded: tuple[StripeProvider, RecordingHttp],
    stripe_mock_with_refunds_url: str,
    reason,
) -> None:
    provider, http = refunds_recorded
    request = refund_request(reason)
    outcome = await provider.refund(request)
    assert outcome.provider_reference is not None
    assert outcome.provider_reference.startswith("re_")
    assert outcome.status is ProviderRefundStatus.SUCCEEDED
    assert outcome.error is None
    method, url, headers = http.sent[-1]
    assert (method, url) == ("post", f"{stripe_mock_with_refunds_url}/v1/refunds")
    assert headers["Idempotency-Key"] == request.refund_key
    assert http.answered[-1]["Idempotency-Key"] == request.refund_key


async def test_refund_status_lists_the_payment_intents_refunds(
    refunds_recorded: tuple[StripeProvider, RecordingHttp], stripe_mock_with_refunds_url: str
) -> None:
    provider, http = refunds_recorded
    # The fixture refunds carry no paygate metadata, so none is ours: never received.
    assert await provider.refund_status("pay-1-refund-1", "pi_123") is None
    method, url, _ = http.sent[-1]
    assert method == "get"
    assert url.startswith(f"{stripe_mock_with_refunds_url}/v1/refunds?")
    assert "payment_intent=pi_123" in url


async def test_an_authorize_only_charge_and_its_capture_are_accepted(
    recorded: tuple[StripeProvider, RecordingHttp], stripe_mock_url: str
) -> None:
    provider, http = recorded
    request = dataclasses.replace(charge_request(), capture=False)
    # The fixture answers succeeded whatever is asked; the spec check is the point.
    assert (await provider.charge(request)).provider_reference is not None
    capture = CaptureRequest("pay-1-capture", "pay-1", "pi_123", Money(800, "EUR"))
    outcome = await provider.capture(capture)
    assert outcome.status is ChargeStatus.SUCCEEDED
    method, url, headers = http.sent[-1]
    assert (method, url) == ("post", f"{stripe_mock_url}/v1/payment_intents/pi_123/capture")
    assert headers["Idempotency-Key"] == "pay-1-capture"


async def test_charge_by_reference_retrieves_the_payment_intent(
    recorded: tuple[StripeProvider, RecordingHttp], stripe_mock_url: str
) -> None:
    provider, http = recorded
    outcome = await provider.charge_by_reference("pi_123")
    assert outcome is not None
    assert outcome.status is ChargeStatus.SUCCEEDED
    assert outcome.provider_reference is not None
    assert http.sent[-1][:2] == (
        "get",
        f"{stripe_mock_url}/v1/payment_intents/pi_123?expand[0]=latest_charge",
    )
