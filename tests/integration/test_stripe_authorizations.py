"""The Stripe adapter's authorization lifecycle against stripe-mock, through the real SDK:
a partial capture sends ``amount_to_capture``, a cancel cancels the PaymentIntent under the
cancel key, and a PaymentIntent Stripe canceled on its own at the end of the hold
(``cancellation_reason: automatic``) reads as expired.

stripe-mock checks each request against Stripe's OpenAPI spec and answers from the fixtures
given here (it is stateless), so each fixture is a PaymentIntent in the state under test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qs

import pytest
import stripe

from domain.money import Money
from providers.port import CancelRequest, CaptureRequest, ChargeStatus
from providers.stripe import StripeProvider
from tests.support.stripe_mock import SUCCEEDED_PAYMENT_INTENT, TEST_API_KEY, run_stripe_mock

pytestmark = pytest.mark.integration


class RecordingHttp(stripe.AIOHTTPClient):
    """The SDK's own aiohttp client, recording each request with its form body."""

    def __init__(self) -> None:
        super().__init__(timeout=5)
        self.sent: list[tuple[str, str, Mapping[str, str], dict[str, list[str]]]] = []

    async def request_stream_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> Any:
        body = parse_qs(post_data.decode() if isinstance(post_data, bytes) else post_data or "")
        self.sent.append((method, url, dict(headers), body))
        return await super().request_stream_async(method, url, headers, post_data)


def intent(**fields: Any) -> Mapping[str, Any]:
    return {**SUCCEEDED_PAYMENT_INTENT, **fields}


@pytest.fixture(scope="module")
def canceled_url() -> Iterator[str]:
    """Every PaymentIntent answered canceled by paygate (no reason given)."""
    fixture = intent(status="canceled", cancellation_reason=None, amount_received=0)
    with run_stripe_mock({"resources": {"payment_intent": fixture}}) as url:
        yield url


@pytest.fixture(scope="module")
def expired_url() -> Iterator[str]:
    """Every PaymentIntent answered canceled by Stripe itself when the hold ended."""
    fixture = intent(status="canceled", cancellation_reason="automatic", amount_received=0)
    with run_stripe_mock({"resources": {"payment_intent": fixture}}) as url:
        yield url


async def _provider(url: str) -> AsyncIterator[tuple[StripeProvider, RecordingHttp]]:
    http = RecordingHttp()
    provider = StripeProvider(TEST_API_KEY, api_base=url, http_client=http)
    await provider.start()
    yield provider, http
    await provider.stop()
    await http.close_async()


@pytest.fixture
async def at_canceled(canceled_url: str) -> AsyncIterator[tuple[StripeProvider, RecordingHttp]]:
    async for pair in _provider(canceled_url):
        yield pair


@pytest.fixture
async def at_expired(expired_url: str) -> AsyncIterator[tuple[StripeProvider, RecordingHttp]]:
    async for pair in _provider(expired_url):
        yield pair


@pytest.fixture
async def at_succeeded(stripe_mock_url: str) -> AsyncIterator[tuple[StripeProvider, RecordingHttp]]:
    async for pair in _provider(stripe_mock_url):
        yield pair


async def test_a_partial_capture_sends_amount_to_capture_under_its_key(
    at_succeeded: tuple[StripeProvider, RecordingHttp], stripe_mock_url: str
) -> None:
    provider, http = at_succeeded
    capture = CaptureRequest("pay-1-capture-425", "pay-1", "pi_123", Money(425, "EUR"))
    outcome = await provider.capture(capture)
    assert outcome.status is ChargeStatus.SUCCEEDED
    method, url, headers, body = http.sent[-1]
    assert (method, url) == ("post", f"{stripe_mock_url}/v1/payment_intents/pi_123/capture")
    assert headers["Idempotency-Key"] == "pay-1-capture-425"
    assert body == {"amount_to_capture": ["425"]}


async def test_a_cancel_cancels_the_payment_intent_under_the_cancel_key(
    at_canceled: tuple[StripeProvider, RecordingHttp], canceled_url: str
) -> None:
    provider, http = at_canceled
    outcome = await provider.cancel(CancelRequest("pay-1-cancel", "pay-1", "pi_123"))
    assert outcome.status is ChargeStatus.CANCELED
    assert outcome.provider_reference == "pi_123"  # stripe-mock echoes the path's id
    method, url, headers, _body = http.sent[-1]
    assert (method, url) == ("post", f"{canceled_url}/v1/payment_intents/pi_123/cancel")
    assert headers["Idempotency-Key"] == "pay-1-cancel"


async def test_a_payment_intent_canceled_at_the_end_of_its_hold_reads_as_expired(
    at_expired: tuple[StripeProvider, RecordingHttp], expired_url: str
) -> None:
    provider, http = at_expired
    found = await provider.charge_by_reference("pi_123")
    assert found is not None
    assert found.status is ChargeStatus.EXPIRED
    assert http.sent[-1][:2] == (
        "get",
        f"{expired_url}/v1/payment_intents/pi_123?expand[0]=latest_charge",
    )
    # A void of it answers the same: the hold is gone either way.
    voided = await provider.cancel(CancelRequest("pay-1-cancel", "pay-1", "pi_123"))
    assert voided.status is ChargeStatus.EXPIRED
