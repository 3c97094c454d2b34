from datetime import timedelta

import pytest
from pydantic import ValidationError

from paygate.providers import build_provider
from paygate.settings import Settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("provider", "name"), [("sandbox", "sandbox"), ("sandbox-inprocess", "sandbox")]
)
def test_sandbox_providers_are_built_by_name(provider, name):
    assert build_provider(Settings(provider=provider)).name == name


def test_stripe_is_built_with_its_key_and_base():
    settings = Settings(
        provider="stripe",
        stripe_api_key="sk_test_123",
        stripe_api_base="http://127.0.0.1:12111",
        abandon_after_s=6 * 3600,
    )
    assert build_provider(settings).name == "stripe"


def test_stripe_without_a_key_is_refused():
    with pytest.raises(SystemExit, match="PAYGATE_STRIPE_API_KEY"):
        build_provider(Settings(provider="stripe", abandon_after_s=6 * 3600))


def test_stripe_needs_an_abandon_window_its_search_and_key_retention_allow():
    with pytest.raises(ValidationError, match="PAYGATE_ABANDON_AFTER_S"):
        Settings(provider="stripe", stripe_api_key="sk_test_123")


def test_a_long_abandon_window_cannot_stretch_stripe_resends_so_it_is_allowed():
    # Re-sends stop at Stripe's own idempotency window (domain.resend_window), whatever
    # abandon_after says: it only bounds how soon Stripe's silence is believed.
    settings = Settings(provider="stripe", stripe_api_key="sk_test_123", abandon_after_s=72 * 3600)
    assert build_provider(settings).idempotency_window == timedelta(hours=24)


def test_an_unknown_provider_is_refused():
    with pytest.raises(SystemExit, match="unknown provider"):
        build_provider(Settings(provider="adyen"))
