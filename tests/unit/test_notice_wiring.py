"""Which notification readers the facade gets from its settings: Alipay's and Stripe's side by
side, Stripe's only with its webhook secret, in the mode of the configured API key."""

from __future__ import annotations

import logging

import pytest

from paygate.notices import notification_readers
from paygate.settings import Environment, Settings
from providers.alipay.notifications import AlipayNotifications
from providers.stripe.webhooks import StripeWebhooks
from tests.support.stripe_events import SECRET, event, headers, payment_intent

pytestmark = pytest.mark.unit

ROUTES = {"alipay": ["alipay"], "*": ["stripe"]}


def settings(**changes) -> Settings:
    fields = {
        "env": Environment.DEVELOPMENT,
        "routes": ROUTES,
        "alipay_app_id": "2021000000000002",
        "alipay_public_key": "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA",
        "stripe_api_key": "sk_test_abc",
        "stripe_webhook_secret": SECRET,
        "abandon_after_s": 6 * 3600,
        **changes,
    }
    return Settings(**fields)


def test_alipay_and_stripe_are_both_wired():
    readers = notification_readers(settings())
    assert set(readers) == {"alipay", "stripe"}
    assert isinstance(readers["alipay"], AlipayNotifications)
    assert isinstance(readers["stripe"], StripeWebhooks)
    assert readers["stripe"].provider == "stripe"


def test_stripe_without_its_secret_is_not_served_in_development(caplog):
    with caplog.at_level(logging.WARNING, logger="paygate.notices"):
        readers = notification_readers(settings(stripe_webhook_secret=None))
    assert set(readers) == {"alipay"}
    assert "PAYGATE_STRIPE_WEBHOOK_SECRET is unset" in caplog.text


def test_no_reader_for_a_provider_not_routed():
    assert set(notification_readers(settings(routes={"*": ["stripe"]}))) == {"stripe"}
    assert notification_readers(settings(routes={}, provider="sandbox")) == {}


def _mode_accepted(reader, livemode: bool) -> bool:
    from providers.notices import NoticeRefusedError, ReceivedNotification

    body = event("payment_intent.succeeded", payment_intent("pay_1-a1"), livemode=livemode)
    try:
        reader.receive(ReceivedNotification(body=body, headers=headers(body)))
    except NoticeRefusedError:
        return False
    return True


@pytest.mark.parametrize(
    ("changes", "live", "test"),
    [
        ({"stripe_api_key": "sk_test_abc"}, False, True),
        ({"stripe_api_key": "rk_live_abc"}, True, False),
        # The facade may be given no API key (it calls no provider): production takes live
        # events only, development either.
        ({"stripe_api_key": None}, True, True),
        ({"stripe_api_key": None, "env": Environment.PRODUCTION}, True, False),
    ],
)
def test_the_events_mode_follows_the_api_key(changes, live, test):
    reader = notification_readers(settings(**changes))["stripe"]
    assert (_mode_accepted(reader, True), _mode_accepted(reader, False)) == (live, test)
