"""Stripe's webhook events, verified through the SDK and read as a ChargeNotice.

Why paygate listens: Stripe's Search API, through which the stray-charge sweep asks about
a key, can trail a charge by more than the sweep waits for it (``status_search_lag``). A
charge under a key the payment left that shows in search only after that wait would never
be found. The ``payment_intent.*`` event Stripe sends when the charge happens hands the key
back to the sweep (consumer.provider_notices), which then asks until search shows it and
reverses it; for the payment's own open attempt, the event records its outcome at once.

Trust: only an event whose ``Stripe-Signature`` header the SDK verifies
(``stripe.Webhook.construct_event``: HMAC-SHA256 of ``<t>.<raw body>`` under this
endpoint's signing secret, ``whsec_...``) and whose timestamp is at most ``tolerance``
old (a replay of a captured request is refused after that) is read. Then, so that no event
of another account or mode is taken for this one's: an event of a connected account
(``account`` set: paygate does not use Connect) and one of the other mode than the
configured API key's (``livemode``) are refused too. A refusal raises
:class:`NoticeRefusedError` with a message of paygate's own; nothing of the body is echoed.

What is read, each event's PaymentIntent through the adapter's own map
(:func:`providers.stripe.transformers.outcome_from_intent`):

    payment_intent.succeeded                  SUCCEEDED (captured)
    payment_intent.amount_capturable_updated  AUTHORIZED (requires_capture, capture_method
                                              manual); no outcome for a charge asked to
                                              capture at once (held_for_a_capture_at_once)
    payment_intent.payment_failed             DECLINED (last_payment_error)
    payment_intent.canceled                   CANCELED or EXPIRED (cancellation_reason)

and one event of a Charge, by :func:`providers.stripe.transformers.outcome_from_refunded_charge`:

    charge.refunded                           SUCCEEDED, captured: amount_captured,
                                               refunded: amount_refunded (the charge's
                                               refunds in all, paygate's and the Dashboard's)
                                               less what a partial capture released

and one event of a Refund, as a :class:`providers.notices.RefundNotice` by the adapter's own
map (:func:`providers.stripe.refund_transformers.outcome_from_refund`):

    refund.failed                             FAILED, with Stripe's failure_reason, for the
                                               refund paygate sent under the refund id in
                                               its metadata (paygateRefundId; the refund key
                                               beside it, paygateRefundKey)

A PaymentIntent still moving (processing, requires_action) gives a notice without an outcome
(nothing to record), as does a refunded Charge that captured nothing (an authorization
released; ``payment_intent.canceled`` says it). Every other event type, and an event of a
PaymentIntent (or its Charge) without paygate's attempt key in its metadata (a charge made
outside paygate on the same account), is acknowledged and logged, nothing recorded:
:meth:`StripeWebhooks.receive` answers None.

Why ``charge.refunded``: a refund made in the Dashboard (outside paygate) of a payment paygate
recorded captured changes nothing the ``payment_intent.*`` events report, and Stripe sends
``charge.refunded`` for every refund, partial ones included, with the Charge's running
``amount_refunded``. That total is all paygate needs (consumer.provider_notices records it as
refunds made outside paygate, domain.provider_refunds.absorbed_refunded_total: paygate's own
refunds, recorded or in flight, are never counted twice; the total never falls). A refund
made outside paygate that fails later is taken back by its own ``refund.failed`` (below),
never by reading a fall of that total. The event's ``created`` goes with the total
(``refunded_as_of``), and a ``refund.failed``'s with the failure (``failed_at``, beside the
Refund's own ``created``): a total Stripe made while a failed refund stood is read net of
it, one it made after the failure is read whole (domain.failed_refund_netting).

Why ``refund.failed``: Stripe can answer paygate's refund ``succeeded`` (or ``pending``) and
fail it later at the card network (a closed card): the money goes back to the merchant's
balance, the Charge's ``amount_refunded`` falls, and the payer is not paid back. Left unread,
paygate kept the refund ``succeeded`` and the client was told the payer had the money.
``refund.failed`` is sent for exactly that change, once per failure, with the Refund (its
``status``, ``failure_reason`` and paygate's metadata) as its object; it is read, and
recorded by consumer.refund_notices (the refund ``failed``, its amount off the payment's
refunded total). ``charge.refund.updated`` (and ``refund.updated``) would say it too, but is
sent for every change of a refund, so most of its deliveries would be acknowledged unread;
one event type for one fact keeps the endpoint's selection small. A Refund without paygate's
metadata (made in the Dashboard) that names its PaymentIntent is read as an
:class:`providers.notices.OutsideRefundFailedNotice`: what paygate counted of it as refunded
outside is taken back, once (consumer.outside_refund_notices); one naming no PaymentIntent
is acknowledged and ignored, as a foreign charge is. A
stray charge's reversal refund carries its reversal key as the refund id
(consumer.stray_charges), and is recorded on the stray charge.

The snapshot in an event is the PaymentIntent as it was when the event was made; Stripe may
deliver events late and out of order. That is safe here because a notice is recorded only on
a payment's open attempt, never over a final outcome (consumer.provider_notices): a late
``amount_capturable_updated`` for a payment captured since finds it final and changes
nothing, as does a replay. The one thing recorded over a final outcome, the refunded total
a ``charge.refunded`` reports, only ever rises: a late or replayed one is old news, and
which failed refunds it still counts is told by Stripe's times, not by when it arrives. A
``refund.failed`` is recorded once: on a refund already failed it changes nothing, and one
that arrives while paygate's refund is still open is recorded as the refund's answer under
its claim, or answered busy (Stripe sends it again) while another worker holds it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any, Final

import stripe
from pydantic import SecretStr

from domain.currencies import minor_unit_exponent
from domain.money import Money
from providers.notices import (
    ChargeNotice,
    NoticeRefusedError,
    NotificationTerms,
    OutsideRefundFailedNotice,
    ProviderNotice,
    ReceivedNotification,
    RefundNotice,
    RefusalReason,
)
from providers.port import ChargeOutcome, ProviderRefundStatus, RefundOutcome
from providers.signing_secrets import stripe_signing_secret_problem
from providers.stripe.amounts import money_from_stripe
from providers.stripe.refund_transformers import (
    REFUND_ID_METADATA_KEY,
    REFUND_KEY_METADATA_KEY,
    outcome_from_refund,
)
from providers.stripe.transformers import (
    PROVIDER_NAME,
    StripePaymentPendingError,
    attempt_key_of,
    intent_id_of_charge,
    outcome_from_intent,
    outcome_from_refunded_charge,
)

log = logging.getLogger("paygate.stripe.webhooks")

SIGNATURE_HEADER: Final = "Stripe-Signature"
# The SDK's default, which Stripe's documentation recommends: a signed request captured on
# the way is refused five minutes after Stripe made it.
DEFAULT_TOLERANCE: Final = timedelta(seconds=stripe.Webhook.DEFAULT_TOLERANCE)

# The events to select for the endpoint in Stripe's Dashboard (docs/operations.md).
REFUNDED_CHARGE_EVENT: Final = "charge.refunded"
FAILED_REFUND_EVENT: Final = "refund.failed"
READ_EVENTS: Final = frozenset(
    {
        FAILED_REFUND_EVENT,
        "payment_intent.succeeded",
        "payment_intent.amount_capturable_updated",
        "payment_intent.payment_failed",
        "payment_intent.canceled",
        REFUNDED_CHARGE_EVENT,
    }
)

# Stripe wants a 2xx soon; the body is not read. JSON, as Stripe's own examples answer.
STRIPE_TERMS: Final = NotificationTerms(
    media_type="application/json",
    acknowledgement='{"received": true}',
    acknowledgement_type="application/json",
    signature_param=SIGNATURE_HEADER,
    attempt_key_param="data.object.metadata",
    account_wide=True,
)


def livemode_of(api_key: SecretStr | None) -> bool | None:
    """The mode of the account's events the API key's prefix says (sk_live_/rk_live_: live,
    sk_test_/rk_test_: test); None when there is no key or it says neither."""
    if api_key is None:
        return None
    key = api_key.get_secret_value()
    if key.startswith(("sk_live_", "rk_live_")):
        return True
    if key.startswith(("sk_test_", "rk_test_")):
        return False
    return None


class StripeWebhooks:
    """Reads the events Stripe posts to ``/v1/notifications/stripe``.

    ``secret`` is the endpoint's signing secret (``whsec_...``, shown in Stripe's Dashboard
    for the endpoint), never logged. ``livemode``: the mode of the events accepted (live
    events only with a live API key); None accepts either (development without a key).
    """

    def __init__(
        self,
        *,
        secret: SecretStr,
        livemode: bool | None = None,
        tolerance: timedelta = DEFAULT_TOLERANCE,
    ) -> None:
        if tolerance <= timedelta(0):
            raise ValueError("the signature's tolerance must be positive")
        problem = stripe_signing_secret_problem(secret.get_secret_value())
        if problem is not None:
            # Checked here too, not only in the settings: a guessable secret makes this
            # public endpoint take anyone's events as Stripe's.
            raise ValueError(problem)
        self._secret = secret
        self._livemode = livemode
        self._tolerance_s = int(tolerance.total_seconds())
        self.provider = PROVIDER_NAME
        self.terms = STRIPE_TERMS

    def receive(self, notification: ReceivedNotification) -> ProviderNotice | None:
        event = self._verified(notification)
        event_id, event_type = _field(event, "id"), _field(event, "type")
        if _field(event, "account") is not None:
            raise NoticeRefusedError(
                "the event is a connected account's, not this account's", RefusalReason.ACCOUNT
            )
        livemode = _field(event, "livemode")
        if self._livemode is not None and livemode is not self._livemode:
            raise NoticeRefusedError(
                f"the event is a {'live' if livemode else 'test'}-mode event; this endpoint "
                f"takes {'live' if self._livemode else 'test'}-mode events only",
                RefusalReason.ACCOUNT,
            )
        if event_type not in READ_EVENTS:
            log.info("Stripe event not read: acknowledged", extra=_about(event_id, event_type))
            return None
        data = _field(event, "data")
        made_at = _unix_time(_field(event, "created"))
        if event_type == REFUNDED_CHARGE_EVENT:
            notice = self._refunded_charge(event_id, event_type, _field(data, "object"))
            return None if notice is None else replace(notice, refunded_as_of=made_at)
        if event_type == FAILED_REFUND_EVENT:
            failed = self._failed_refund(event_id, event_type, _field(data, "object"))
            if isinstance(failed, OutsideRefundFailedNotice):
                return replace(failed, failed_at=made_at)
            return failed
        intent = _field(data, "object")
        if not isinstance(intent, stripe.PaymentIntent):
            raise NoticeRefusedError(f"the {event_type} event holds no PaymentIntent")
        return self._charge_notice(
            event_id,
            event_type,
            intent,
            attempt_key_of(intent),
            lambda: _outcome(intent),
        )

    def _refunded_charge(
        self, event_id: object, event_type: str, charge: object
    ) -> ChargeNotice | None:
        if not isinstance(charge, stripe.Charge):
            raise NoticeRefusedError(f"the {event_type} event holds no Charge")
        # A Charge paygate made names its PaymentIntent; one without is another's.
        attempt_key = attempt_key_of(charge) if intent_id_of_charge(charge) is not None else None
        return self._charge_notice(
            event_id,
            event_type,
            charge,
            attempt_key,
            lambda: outcome_from_refunded_charge(charge),
        )

    def _charge_notice(
        self,
        event_id: object,
        event_type: str,
        obj: stripe.PaymentIntent | stripe.Charge,
        attempt_key: str | None,
        outcome_of: Callable[[], ChargeOutcome | None],
    ) -> ChargeNotice | None:
        """The notice of a PaymentIntent or Charge event: None for an object paygate did not
        create (no attempt key: acknowledged, ignored), refused when its figures cannot be
        read (``outcome_of`` raises ValueError)."""
        if attempt_key is None:
            log.info(
                "Stripe event of a %s paygate did not create: acknowledged, ignored",
                type(obj).__name__,
                extra={**_about(event_id, event_type), "provider_reference": _field(obj, "id")},
            )
            return None
        try:
            amount = money_from_stripe(_field(obj, "amount"), _field(obj, "currency"))
            outcome = outcome_of()
        except ValueError as exc:
            raise NoticeRefusedError(f"unreadable {event_type} event: {exc}") from None
        return ChargeNotice(self.provider, attempt_key, outcome, amount)

    def _failed_refund(
        self, event_id: object, event_type: str, refund: object
    ) -> RefundNotice | OutsideRefundFailedNotice | None:
        if not isinstance(refund, stripe.Refund):
            raise NoticeRefusedError(f"the {event_type} event holds no Refund")
        refund_id = _metadata_value(refund, REFUND_ID_METADATA_KEY)
        if refund_id is None or _metadata_value(refund, REFUND_KEY_METADATA_KEY) is None:
            return self._failed_outside(event_id, event_type, refund)
        amount, outcome = _read_refund(event_type, refund)
        if outcome.status is not ProviderRefundStatus.FAILED:
            # Not what the event type says: nothing is recorded on it, and refusing it
            # would only have Stripe resend it for days. The reconciler asks Stripe itself.
            log.warning(
                "Stripe refund.failed event of a Refund that has not failed: ignored",
                extra={
                    **_about(event_id, event_type),
                    "provider_reference": outcome.provider_reference,
                },
            )
            return None
        return RefundNotice(self.provider, refund_id, outcome, amount, _intent_id(refund))

    def _failed_outside(
        self, event_id: object, event_type: str, refund: stripe.Refund
    ) -> OutsideRefundFailedNotice | None:
        """A Refund paygate did not create (made in the Dashboard) that failed: the notice
        that takes it back from what paygate counted refunded outside. Acknowledged and
        ignored, as a foreign charge is, when it cannot be a refund of a payment of
        paygate's: of no PaymentIntent (paygate charges by PaymentIntent), not failed, or
        in a currency paygate does not know. Refused when it could be one but its amount
        cannot be read (not a positive integer)."""
        intent_id = _intent_id(refund)
        currency = _field(refund, "currency")
        known = isinstance(currency, str) and minor_unit_exponent(currency.upper()) is not None
        if _field(refund, "status") != "failed" or intent_id is None or not known:
            log.info(
                "Stripe event of a Refund paygate did not create, not failed, of no "
                "PaymentIntent or in a currency paygate does not know: acknowledged, ignored",
                extra={**_about(event_id, event_type), "provider_reference": _field(refund, "id")},
            )
            return None
        amount, outcome = _read_refund(event_type, refund)
        if outcome.provider_reference is None:  # never: outcome_from_refund needs the id
            raise NoticeRefusedError(f"unreadable {event_type} event: the Refund has no id")
        return OutsideRefundFailedNotice(
            self.provider,
            outcome.provider_reference,
            amount,
            intent_id,
            made_at=_unix_time(_field(refund, "created")),
        )

    def _verified(self, notification: ReceivedNotification) -> Any:
        """The event, once the SDK verified its signature over the raw body."""
        try:
            return stripe.Webhook.construct_event(
                notification.body,
                notification.header(SIGNATURE_HEADER),
                self._secret.get_secret_value(),
                tolerance=self._tolerance_s,
            )
        except stripe.SignatureVerificationError as exc:
            # The SDK's reason (missing, malformed, no signature matching, too old) is for
            # the operator's log, not the sender; it holds neither the body nor the secret.
            log.warning(
                "Stripe event refused: %s", exc.user_message, extra={"provider": PROVIDER_NAME}
            )
            raise NoticeRefusedError(
                f"the event is not signed for this endpoint: {SIGNATURE_HEADER} missing, "
                f"forged, made with another secret, or older than {self._tolerance_s} s",
                RefusalReason.SIGNATURE,
            ) from None
        except (ValueError, AttributeError, RecursionError):
            # Not UTF-8, not JSON, or not an event (a thin v2 notification): ValueError. A
            # signed body that is JSON but no object (the SDK reads ``[]`` or ``1`` with
            # ``.get``: AttributeError), or nested deeper than the parser's recursion
            # limit: read only after the signature verified, so Stripe's own bytes, yet
            # refused with the same stable answer rather than a 500 and a traceback.
            raise NoticeRefusedError("the event is not a Stripe event in JSON") from None


def _outcome(intent: stripe.PaymentIntent) -> ChargeOutcome | None:
    """The PaymentIntent's outcome by the adapter's map; None while it is still moving."""
    try:
        return outcome_from_intent(intent)
    except StripePaymentPendingError:
        return None


def _read_refund(event_type: str, refund: stripe.Refund) -> tuple[Money, RefundOutcome]:
    """The Refund's amount and outcome; refused when they cannot be read."""
    try:
        amount = money_from_stripe(_field(refund, "amount"), _field(refund, "currency"))
        return amount, outcome_from_refund(refund)
    except ValueError as exc:
        raise NoticeRefusedError(f"unreadable {event_type} event: {exc}") from None


def _intent_id(refund: stripe.Refund) -> str | None:
    """The id of the PaymentIntent the Refund refunds, expanded or not (paygate refunds by
    PaymentIntent); None when it names none."""
    intent = _field(refund, "payment_intent")
    intent_id = _field(intent, "id") if isinstance(intent, stripe.PaymentIntent) else intent
    return intent_id if isinstance(intent_id, str) and intent_id else None


def _unix_time(value: object) -> int | None:
    """A Stripe timestamp (``created``: whole seconds since the epoch), None when it is not
    one: the fact is then taken as standing at every reading (domain.failed_refund_netting),
    never refused, since Stripe would resend the event for days. A time past the year 2100
    is not one either: beyond a BIGINT it would fail the write for good, and below that it
    would stay the charge's latest reading for ever."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < _YEAR_2100:
        return value
    return None


_YEAR_2100 = 4_102_444_800  # 2100-01-01T00:00:00Z in Unix seconds


def _field(obj: object, name: str) -> Any:
    """A field of an SDK object, None when absent (the SDK raises AttributeError)."""
    return getattr(obj, name, None)


def _metadata_value(obj: object, key: str) -> str | None:
    """A string of the object's metadata, None when absent (a StripeObject refuses get())."""
    try:
        value = _field(obj, "metadata")[key]
    except (KeyError, TypeError):
        return None
    return value if isinstance(value, str) and value else None


def _about(event_id: object, event_type: object) -> dict[str, object]:
    return {"provider": PROVIDER_NAME, "stripe_event": event_id, "stripe_event_type": event_type}
