"""Stripe's webhook events read by the SDK-verified reader: signed by hand as Stripe
documents (tests.support.stripe_events), verified by the official SDK; refused when
unsigned, forged, tampered, stale, another endpoint's, account's or mode's; acknowledged and
ignored when not paygate's; read through the adapter's own status map otherwise."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest
import stripe
from pydantic import SecretStr

from domain.errors import ErrorCode
from domain.money import Money
from providers.notices import (
    ChargeNotice,
    NoticeRefusedError,
    OutsideRefundFailedNotice,
    ReceivedNotification,
    RefundNotice,
    RefusalReason,
)
from providers.port import ChargeStatus, ProviderRefundStatus
from providers.stripe.webhooks import STRIPE_TERMS, StripeWebhooks, livemode_of
from tests.support.stripe_events import (
    OTHER_SECRET,
    SECRET,
    event,
    failed_refund,
    headers,
    payment_intent,
    signature,
)

pytestmark = pytest.mark.unit

KEY = "pay_0123456789abcdef-a1"


def reader(**changes) -> StripeWebhooks:
    return StripeWebhooks(secret=SecretStr(changes.pop("secret", SECRET)), **changes)


def received(body: bytes, secret: str = SECRET, *, at: int | None = None) -> ReceivedNotification:
    return ReceivedNotification(body=body, headers=headers(body, secret, at=at))


def read(body: bytes, **changes) -> ChargeNotice | None:
    notice = reader(**changes).receive(received(body))
    assert notice is None or isinstance(notice, ChargeNotice)
    return notice


def read_refund(body: bytes) -> RefundNotice | None:
    notice = reader().receive(received(body))
    assert notice is None or isinstance(notice, RefundNotice)
    return notice


def test_a_signed_succeeded_event_is_the_attempts_captured_charge():
    notice = read(event("payment_intent.succeeded", payment_intent(KEY, intent_id="pi_1")))

    assert notice is not None
    assert (notice.provider, notice.attempt_key, notice.amount) == (
        "stripe",
        KEY,
        Money(1050, "EUR"),
    )
    assert notice.outcome is not None
    assert notice.outcome.status is ChargeStatus.SUCCEEDED
    assert notice.outcome.provider_reference == "pi_1"
    assert notice.outcome.captured == Money(1050, "EUR")


@pytest.mark.parametrize("capture_method", ["automatic", "automatic_async"])
def test_a_capture_at_once_waiting_for_a_capture_is_no_outcome(capture_method: str):
    # Held, not taken, though paygate asked Stripe to capture at once: not "authorized" (an
    # authorization nobody would capture), the payment stays pending as the charge call
    # leaves it.
    notice = read(
        event(
            "payment_intent.amount_capturable_updated",
            payment_intent(KEY, status="requires_capture", capture_method=capture_method),
        )
    )

    assert notice is not None
    assert (notice.attempt_key, notice.amount) == (KEY, Money(1050, "EUR"))
    assert notice.outcome is None


def test_each_event_read_maps_through_the_adapters_status_map():
    authorized = read(
        event(
            "payment_intent.amount_capturable_updated",
            payment_intent(KEY, status="requires_capture"),
        )
    )
    declined = read(
        event(
            "payment_intent.payment_failed",
            payment_intent(
                KEY,
                status="requires_payment_method",
                last_payment_error={
                    "type": "card_error",
                    "code": "card_declined",
                    "decline_code": "insufficient_funds",
                    "message": "Your card has insufficient funds.",
                },
            ),
        )
    )
    voided = read(
        event(
            "payment_intent.canceled",
            payment_intent(KEY, status="canceled", cancellation_reason="requested_by_customer"),
        )
    )
    expired = read(
        event(
            "payment_intent.canceled",
            payment_intent(KEY, status="canceled", cancellation_reason="automatic"),
        )
    )

    assert authorized is not None
    assert authorized.outcome is not None
    assert authorized.outcome.status is ChargeStatus.AUTHORIZED
    assert declined is not None
    assert declined.outcome is not None
    assert declined.outcome.status is ChargeStatus.DECLINED
    assert declined.outcome.error is not None
    assert declined.outcome.error.code is ErrorCode.INSUFFICIENT_FUNDS
    assert voided is not None
    assert voided.outcome is not None
    assert voided.outcome.status is ChargeStatus.CANCELED
    assert expired is not None
    assert expired.outcome is not None
    assert expired.outcome.status is ChargeStatus.EXPIRED


def test_an_intent_still_moving_gives_a_notice_without_outcome():
    notice = read(event("payment_intent.succeeded", payment_intent(KEY, status="processing")))
    assert notice is not None
    assert notice.outcome is None


def test_amounts_are_read_in_stripes_scale():
    # Stripe writes ISK in hundredths that are always 00 (providers.stripe.amounts).
    notice = read(
        event("payment_intent.succeeded", payment_intent(KEY, amount=500, currency="isk"))
    )
    assert notice is not None
    assert notice.amount == Money(5, "ISK")


@pytest.mark.parametrize(
    "event_type", ["customer.created", "charge.succeeded", "payment_intent.processing"]
)
def test_events_not_read_are_acknowledged_with_nothing_to_record(event_type):
    assert read(event(event_type, payment_intent(KEY))) is None


def test_a_charge_made_outside_paygate_is_ignored_and_logged(caplog):
    with caplog.at_level(logging.INFO, logger="paygate.stripe.webhooks"):
        notice = read(event("payment_intent.succeeded", payment_intent(None, intent_id="pi_x")))
    assert notice is None
    (record,) = [r for r in caplog.records if r.name == "paygate.stripe.webhooks"]
    assert "did not create" in record.getMessage()
    assert record.provider_reference == "pi_x"


def test_the_hand_made_signature_is_the_one_stripes_sdk_makes():
    body = event("payment_intent.succeeded", payment_intent(KEY))
    at = int(time.time())
    assert signature(body, at=at) == stripe.WebhookSignature.generate_signature_header(
        body.decode(), SECRET, timestamp=at
    )


def test_a_secret_being_rolled_verifies_with_either_signature():
    # While an endpoint's secret is rolled, Stripe signs with the old and the new one.
    body = event("payment_intent.succeeded", payment_intent(KEY))
    old = signature(body, OTHER_SECRET)
    new = signature(body, SECRET).split(",")[1]
    notification = ReceivedNotification(body=body, headers={"Stripe-Signature": f"{old},{new}"})
    assert reader().receive(notification) is not None


def test_the_header_is_found_in_any_case():
    body = event("payment_intent.succeeded", payment_intent(KEY))
    notification = ReceivedNotification(body=body, headers={"stripe-signature": signature(body)})
    assert reader().receive(notification) is not None


def refused(notification: ReceivedNotification, **changes) -> str:
    with pytest.raises(NoticeRefusedError) as refusal:
        reader(**changes).receive(notification)
    return str(refusal.value)


def test_unsigned_forged_tampered_and_other_secrets_are_refused(caplog):
    body = event("payment_intent.succeeded", payment_intent(KEY, amount=1050))
    tampered = body.replace(b'"amount": 1050', b'"amount": 1')
    assert tampered != body
    cases = {
        "unsigned": ReceivedNotification(body=body, headers={}),
        "garbled": ReceivedNotification(body=body, headers={"Stripe-Signature": "nonsense"}),
        "v0 only": ReceivedNotification(
            body=body, headers={"Stripe-Signature": signature(body).replace("v1=", "v0=")}
        ),
        "another endpoint's secret": received(body, OTHER_SECRET),
        "tampered after signing": ReceivedNotification(
            body=tampered, headers={"Stripe-Signature": signature(body)}
        ),
    }
    with caplog.at_level(logging.DEBUG):
        for name, notification in cases.items():
            message = refused(notification)
            assert "not signed for this endpoint" in message, name
            assert KEY not in message, "no payload echoed"
            assert "1050" not in message, "no payload echoed"
    # Configured with another endpoint's secret, nothing Stripe signs for this one passes.
    assert "not signed" in refused(received(body), secret=OTHER_SECRET)
    assert SECRET not in caplog.text
    assert OTHER_SECRET not in caplog.text


def test_a_stale_signature_is_refused_and_a_recent_one_is_not():
    body = event("payment_intent.succeeded", payment_intent(KEY))
    now = int(time.time())
    assert "older than 300 s" in refused(received(body, at=now - 301 - 5))
    assert reader().receive(received(body, at=now - 200)) is not None
    shorter = timedelta(seconds=60)
    assert "older than 60 s" in refused(received(body, at=now - 120), tolerance=shorter)


def test_a_connected_accounts_event_is_refused():
    body = event("payment_intent.succeeded", payment_intent(KEY), account="acct_1Connected")
    assert "connected account" in refused(received(body))


def test_an_event_of_the_other_mode_is_refused():
    live = event("payment_intent.succeeded", payment_intent(KEY), livemode=True)
    test = event("payment_intent.succeeded", payment_intent(KEY), livemode=False)
    assert "live-mode event" in refused(received(live), livemode=False)
    assert "test-mode event" in refused(received(test), livemode=True)
    assert reader(livemode=True).receive(received(live)) is not None
    assert reader(livemode=None).receive(received(test)) is not None


def test_a_signed_body_that_is_not_an_event_is_refused():
    for body in (b"not json", b'{"object": "v2.core.event", "id": "evt_thin"}'):
        assert "not a Stripe event" in refused(received(body))
    no_intent = event("payment_intent.succeeded", {"object": "charge", "id": "ch_1"})
    assert "holds no PaymentIntent" in refused(received(no_intent))
    no_amount = event("payment_intent.succeeded", payment_intent(KEY, amount=0))
    assert "unreadable" in refused(received(no_amount))


def test_the_mode_of_the_api_key():
    assert livemode_of(SecretStr("sk_live_x")) is True
    assert livemode_of(SecretStr("rk_live_x")) is True
    assert livemode_of(SecretStr("sk_test_x")) is False
    assert livemode_of(SecretStr("rk_test_x")) is False
    assert livemode_of(SecretStr("whatever")) is None
    assert livemode_of(None) is None


def test_stripe_is_answered_in_json_and_its_unknown_keys_acknowledged():
    assert STRIPE_TERMS.media_type == "application/json"
    assert STRIPE_TERMS.acknowledgement_type == "application/json"
    assert STRIPE_TERMS.account_wide


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_",  # what whsec_${SECRET} becomes with the variable unset: everyone's key
        "whsec_0123456789abcde",  # fifteen characters: guessable, or a truncated paste
        SECRET + "\n",  # a line break read from a file is signed with: nothing verifies
        " " + SECRET,
    ],
)
def test_a_guessable_or_mangled_signing_secret_is_refused_when_the_reader_is_built(secret):
    # Guard: providers.signing_secrets, checked in StripeWebhooks.__init__. Without it the
    # SDK verifies anything signed under "whsec_", which anyone can compute.
    with pytest.raises(ValueError, match="signing secret"):
        StripeWebhooks(secret=SecretStr(secret))


def test_an_event_forged_under_the_bare_prefix_never_reaches_a_reader():
    forged = event(
        "payment_intent.payment_failed",
        payment_intent(KEY, status="canceled", cancellation_reason="abandoned"),
    )
    with pytest.raises(ValueError, match="signing secret"):
        reader(secret="whsec_").receive(received(forged, "whsec_"))


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"1",
        b'"event"',
        b"null",
        # Under the facade's 64 KiB body limit, deeper than the JSON parser's recursion.
        b"[" * 30_000 + b"]" * 30_000,
    ],
)
def test_a_signed_body_that_is_json_but_no_event_object_is_refused_not_a_crash(body):
    # Guard: the (ValueError, AttributeError, RecursionError) clause of
    # StripeWebhooks._verified; without it the SDK's AttributeError / RecursionError is a
    # 500 with a traceback instead of the stable invalid_request.
    with pytest.raises(NoticeRefusedError, match="not a Stripe event in JSON"):
        reader().receive(received(body))


def refunded_charge(attempt_key: str | None = KEY, **fields) -> dict[str, object]:
    """A Charge as ``charge.refunded`` renders it: the PaymentIntent's metadata copied."""
    metadata = {} if attempt_key is None else {"paygateAttemptKey": attempt_key}
    return {
        "id": "ch_1",
        "object": "charge",
        "amount": 1050,
        "amount_captured": 1050,
        "amount_refunded": 300,
        "captured": True,
        "currency": "eur",
        "metadata": metadata,
        "payment_intent": "pi_1",
        "refunded": False,
        "status": "succeeded",
        **fields,
    }


def test_a_refunded_charge_is_its_intents_capture_with_the_charges_refunds_in_all():
    notice = read(event("charge.refunded", refunded_charge()))

    assert notice is not None
    assert (notice.attempt_key, notice.amount) == (KEY, Money(1050, "EUR"))
    assert notice.outcome is not None
    assert notice.outcome.status is ChargeStatus.SUCCEEDED
    assert notice.outcome.provider_reference == "pi_1"  # paygate's reference: the intent
    assert notice.outcome.captured == Money(1050, "EUR")
    assert notice.outcome.refunded == Money(300, "EUR")
    assert not notice.outcome.nothing_kept
    whole = read(event("charge.refunded", refunded_charge(amount_refunded=1050, refunded=True)))
    assert whole is not None
    assert whole.outcome is not None
    assert whole.outcome.nothing_kept
    # An expanded PaymentIntent names the same one.
    expanded = read(event("charge.refunded", refunded_charge(payment_intent={"id": "pi_1"})))
    assert expanded is not None
    assert expanded.outcome is not None
    assert expanded.outcome.provider_reference == "pi_1"


def test_a_released_authorization_refunded_is_no_capture():
    released = refunded_charge(captured=False, amount_captured=0, amount_refunded=1050)
    notice = read(event("charge.refunded", released))
    assert notice is not None
    assert notice.outcome is None  # payment_intent.canceled reports it


def test_the_release_of_a_partial_capture_is_never_read_as_a_refund_of_the_capture():
    """Capturing 600 of an authorization of 1050 releases the other 450, which Stripe
    counts in the Charge's amount_refunded as it counts a whole released authorization's
    (``captured`` false, amount_refunded the amount). Read as refunds of the 600 captured,
    the release would record 450 refunded outside: the payer could be refunded only 150 of
    the 600 taken. Only what cannot be the release is a refund of the capture."""
    released_only = refunded_charge(amount_captured=600, amount_refunded=450)
    notice = read(event("charge.refunded", released_only))
    assert notice is not None
    assert notice.outcome is not None
    assert notice.outcome.captured == Money(600, "EUR")
    assert notice.outcome.refunded is None  # nothing refunded of the capture
    assert not notice.outcome.nothing_kept

    and_100 = read(
        event("charge.refunded", refunded_charge(amount_captured=600, amount_refunded=550))
    )
    assert and_100 is not None
    assert and_100.outcome is not None
    assert and_100.outcome.refunded == Money(100, "EUR")

    whole = refunded_charge(amount_captured=600, amount_refunded=1050, refunded=True)
    whole_notice = read(event("charge.refunded", whole))
    assert whole_notice is not None
    assert whole_notice.outcome is not None
    assert whole_notice.outcome.refunded == Money(600, "EUR")
    assert whole_notice.outcome.nothing_kept


def test_a_charge_paygate_did_not_make_is_ignored():
    assert read(event("charge.refunded", refunded_charge(attempt_key=None))) is None
    assert read(event("charge.refunded", refunded_charge(payment_intent=None))) is None


def test_an_unreadable_refunded_charge_is_refused():
    assert "holds no Charge" in refused(received(event("charge.refunded", payment_intent(KEY))))
    for bad in ({"amount_refunded": -5}, {"amount_captured": "all"}, {"currency": "zzz"}):
        message = refused(received(event("charge.refunded", refunded_charge(**bad))))
        assert "unreadable charge.refunded event" in message, bad


def test_refusals_carry_a_fixed_reason():
    body = event("payment_intent.succeeded", payment_intent(KEY))
    cases = [
        (ReceivedNotification(body=body, headers={}), {}, RefusalReason.SIGNATURE),
        (received(body, OTHER_SECRET), {}, RefusalReason.SIGNATURE),
        (received(body), {"livemode": True}, RefusalReason.ACCOUNT),
        (
            received(event("payment_intent.succeeded", payment_intent(KEY), account="acct_1")),
            {},
            RefusalReason.ACCOUNT,
        ),
        (received(b"not json"), {}, RefusalReason.UNREADABLE),
    ]
    for notification, changes, reason in cases:
        with pytest.raises(NoticeRefusedError) as refusal:
            reader(**changes).receive(notification)
        assert refusal.value.reason is reason


# --- refund.failed ---------------------------------------------------------------------------


def test_a_failed_refund_paygate_made_is_a_refund_notice_with_stripes_reason():
    notice = read_refund(event("refund.failed", failed_refund("ref_1", "re_1", amount=300)))

    assert notice is not None
    assert (notice.provider, notice.refund_id, notice.amount) == (
        "stripe",
        "ref_1",
        Money(300, "EUR"),
    )
    assert notice.outcome.status is ProviderRefundStatus.FAILED
    assert notice.outcome.provider_reference == "re_1"
    assert notice.outcome.error is not None
    assert notice.outcome.error.decline_code == "expired_or_canceled_card"
    assert notice.charge_reference == "pi_1"  # what binds it to the payment


def test_a_failed_refund_naming_no_payment_intent_names_no_charge():
    notice = read_refund(
        event("refund.failed", failed_refund("ref_1", "re_1", amount=300, payment_intent=None))
    )
    assert notice is not None
    assert notice.charge_reference is None


def test_a_failed_refund_paygate_did_not_make_is_the_failure_of_a_refund_made_outside():
    # Made in the Dashboard: no paygate metadata. Its PaymentIntent names the payment; the
    # Refund's created and the event's are when Stripe made the refund and failed it.
    dashboard = failed_refund(None, "re_x", created=1_765_000_000)
    notice = reader().receive(received(event("refund.failed", dashboard, created=1_765_000_090)))
    assert notice == OutsideRefundFailedNotice(
        "stripe",
        "re_x",
        Money(1050, "EUR"),
        "pi_1",
        made_at=1_765_000_000,
        failed_at=1_765_000_090,
    )


@pytest.mark.parametrize("created", [None, "1765000000", True, 0, -5, 1.5, 4_102_444_800, 2**63])
def test_a_time_stripe_does_not_give_as_whole_seconds_is_read_as_not_known(created):
    """Not refused (Stripe would resend it for days): a fact without a time is netted from
    every reading (domain.failed_refund_netting)."""
    dashboard = failed_refund(None, "re_x", created=created)
    notice = reader().receive(received(event("refund.failed", dashboard, created=created)))
    assert isinstance(notice, OutsideRefundFailedNotice)
    assert (notice.made_at, notice.failed_at) == (None, None)
    charge = read(event("charge.refunded", refunded_charge(), created=created))
    assert charge is not None
    assert charge.refunded_as_of is None


def test_a_charge_refunded_reading_carries_the_time_stripe_made_it():
    notice = read(event("charge.refunded", refunded_charge(), created=1_765_000_042))
    assert notice is not None
    assert notice.refunded_as_of == 1_765_000_042
    # A PaymentIntent's event reports no refunded total: no reading's time.
    intent = read(event("payment_intent.succeeded", payment_intent("pay_1-a1"), created=7))
    assert intent is not None
    assert intent.refunded_as_of is None


def test_a_refund_paygate_did_not_make_of_no_payment_intent_or_not_failed_is_ignored(caplog):
    with caplog.at_level(logging.INFO, logger="paygate.stripe.webhooks"):
        of_no_intent = failed_refund(None, "re_x", payment_intent=None)
        assert read_refund(event("refund.failed", of_no_intent)) is None
        not_failed = failed_refund(None, "re_x", status="succeeded", failure_reason=None)
        assert read_refund(event("refund.failed", not_failed)) is None
        # No payment of paygate's is in a currency paygate does not know: another system's.
        unknown_currency = failed_refund(None, "re_x", currency="zzz")
        assert read_refund(event("refund.failed", unknown_currency)) is None
    assert "Refund paygate did not create" in caplog.text


def test_a_failed_refund_paygate_did_not_make_with_no_positive_amount_is_refused():
    for amount in (0, -300):
        message = refused(
            received(event("refund.failed", failed_refund(None, "re_x", amount=amount)))
        )
        assert "unreadable refund.failed event" in message


def test_a_refund_failed_event_of_a_refund_not_failed_records_nothing():
    succeeded = failed_refund("ref_1", "re_1", status="succeeded", failure_reason=None)
    assert read_refund(event("refund.failed", succeeded)) is None


def test_an_unreadable_failed_refund_is_refused():
    assert "holds no Refund" in refused(received(event("refund.failed", payment_intent(KEY))))
    message = refused(received(event("refund.failed", failed_refund("ref_1", "re_1", amount=-1))))
    assert "unreadable refund.failed event" in message
