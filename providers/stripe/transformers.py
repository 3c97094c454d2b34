"""Stripe's request and response shapes as paygate sends and reads them, the maps from
Stripe's statuses and codes to paygate's catalogue, and the map from the SDK's exceptions to
paygate's errors.

Everything here is pure (no I/O): the adapter calls the SDK and raises what
:func:`error_from_stripe` returns, ``from`` the SDK's exception.

PaymentIntent status -> what paygate records::

    succeeded                                   SUCCEEDED, captured: amount_received,
                                                 refunded: latest_charge.amount_refunded
                                                 (when expanded)
    requires_payment_method + last_payment_error DECLINED, code from the error
    canceled, reason automatic or expired       EXPIRED (an authorization's hold ran out)
    canceled, any other reason                  CANCELED (voided: by paygate's cancel, or
                                                 in the Dashboard); for a charge, a decline
                                                 (fraudulent -> fraud_suspected)
    requires_capture, capture_method manual     AUTHORIZED (asked with capture=False)
    requires_capture, any other capture_method  outcome unknown (StripePaymentPendingError):
                                                 asked to capture at once, the money is only
                                                 held; never recorded authorized (see
                                                 :func:`held_for_a_capture_at_once`)
    requires_payment_method without an error,   outcome unknown (StripePaymentPendingError):
    processing, requires_action,                 not final, so never recorded as failed;
    requires_confirmation,                       the payment stays pending until a later
    any status Stripe adds later                 status lookup sees a final one
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from types import MappingProxyType
from typing import Any, Final

import aiohttp
import stripe
from stripe.params import PaymentIntentCreateParams

from domain.accounts import AccountType
from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from providers.errors import (
    ProviderError,
    ProviderRateLimitedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from providers.port import ChargeOutcome, ChargeRequest, ChargeStatus
from providers.retry_after import parse_retry_after
from providers.stripe.amounts import money_from_stripe, to_stripe_amount

PROVIDER_NAME: Final = "stripe"

# Metadata keys on every PaymentIntent paygate creates. The attempt key is what
# charge_status searches for.
PAYMENT_REQUEST_ID_KEY: Final = "paymentRequestId"
ATTEMPT_KEY_METADATA_KEY: Final = "paygateAttemptKey"


# --- errors of this adapter ------------------------------------------------------------------


class StripePaymentPendingError(ProviderTimeoutError):
    """Stripe holds the PaymentIntent in a status that is not final (processing, waiting for
    3-D Secure, ...). It may still be charged, so like a timeout: outcome unknown.

    ``held``: authorized though asked to capture at once (:func:`held_for_a_capture_at_once`),
    so the money is held under the PaymentIntent: ``held_reference`` names it
    (providers.errors)."""

    def __init__(
        self, provider: str, message: str, *, intent_id: str, status: str, held: bool = False
    ) -> None:
        super().__init__(provider, message)
        self.intent_id = intent_id
        self.status = status
        self.held_reference = intent_id if held else None


class StripeIdempotencyConflictError(ProviderTimeoutError):
    """Stripe refused the attempt key because it was first used with other parameters.

    The first request under this key may well have charged (a resend after an upgrade that
    changed the parameters' shape is enough), so this is an unknown outcome, not a failure:
    the payment stays pending and the reconciler finds the first PaymentIntent by its key.
    """

    code = ErrorCode.IDEMPOTENCY_CONFLICT


class StripeAuthenticationError(ProviderUnavailableError):
    """Stripe refused the API key (401) or its permissions (403). Nothing was charged, and
    resending cannot help until the configuration is fixed: not retriable."""

    retriable = False


class StripeRequestRejectedError(ProviderError):
    """Stripe refused the request as invalid (400/404) for a reason the payer cannot fix: a
    paygate bug or a Stripe account setting. Nothing was charged; resending cannot help."""

    code = ErrorCode.INTERNAL_ERROR


# --- decline codes -------------------------------------------------------------------------

# Stripe's issuer decline codes (``decline_code``), as documented in Stripe's "Decline
# codes" list. Every documented code is listed, even those that map to the default, so that
# a reader sees each was considered; a unit test checks every entry.
DECLINE_CODES: Final[Mapping[str, ErrorCode]] = MappingProxyType(
    {
        "approve_with_id": ErrorCode.PAYMENT_DECLINED,
        "authentication_required": ErrorCode.PAYMENT_DECLINED,
        "call_issuer": ErrorCode.PAYMENT_DECLINED,
        "card_not_supported": ErrorCode.PAYMENT_DECLINED,
        "card_velocity_exceeded": ErrorCode.INSUFFICIENT_FUNDS,
        "currency_not_supported": ErrorCode.PAYMENT_DECLINED,
        "do_not_honor": ErrorCode.PAYMENT_DECLINED,
        "do_not_try_again": ErrorCode.PAYMENT_DECLINED,
        "duplicate_transaction": ErrorCode.PAYMENT_DECLINED,
        "expired_card": ErrorCode.PAYMENT_DECLINED,
        "fraudulent": ErrorCode.FRAUD_SUSPECTED,
        "generic_decline": ErrorCode.PAYMENT_DECLINED,
        "incorrect_cvc": ErrorCode.INVALID_ACCOUNT,
        "incorrect_number": ErrorCode.INVALID_ACCOUNT,
        "incorrect_pin": ErrorCode.INVALID_ACCOUNT,
        "incorrect_zip": ErrorCode.INVALID_ACCOUNT,
        "insufficient_funds": ErrorCode.INSUFFICIENT_FUNDS,
        "invalid_account": ErrorCode.INVALID_ACCOUNT,
        "invalid_amount": ErrorCode.PAYMENT_DECLINED,
        "invalid_cvc": ErrorCode.INVALID_ACCOUNT,
        "invalid_expiry_month": ErrorCode.INVALID_ACCOUNT,
        "invalid_expiry_year": ErrorCode.INVALID_ACCOUNT,
        "invalid_number": ErrorCode.INVALID_ACCOUNT,
        "invalid_pin": ErrorCode.INVALID_ACCOUNT,
        "issuer_not_available": ErrorCode.PAYMENT_DECLINED,
        "lost_card": ErrorCode.FRAUD_SUSPECTED,
        "merchant_blacklist": ErrorCode.FRAUD_SUSPECTED,
        "new_account_information_available": ErrorCode.INVALID_ACCOUNT,
        "no_action_taken": ErrorCode.PAYMENT_DECLINED,
        "not_permitted": ErrorCode.PAYMENT_DECLINED,
        "offline_pin_required": ErrorCode.PAYMENT_DECLINED,
        "online_or_offline_pin_required": ErrorCode.PAYMENT_DECLINED,
        "pickup_card": ErrorCode.FRAUD_SUSPECTED,
        "pin_try_exceeded": ErrorCode.PAYMENT_DECLINED,
        "processing_error": ErrorCode.PAYMENT_DECLINED,
        "reenter_transaction": ErrorCode.PAYMENT_DECLINED,
        "restricted_card": ErrorCode.FRAUD_SUSPECTED,
        "revocation_of_all_authorizations": ErrorCode.PAYMENT_DECLINED,
        "revocation_of_authorization": ErrorCode.PAYMENT_DECLINED,
        "security_violation": ErrorCode.PAYMENT_DECLINED,
        "service_not_allowed": ErrorCode.PAYMENT_DECLINED,
        "stolen_card": ErrorCode.FRAUD_SUSPECTED,
        "stop_payment_order": ErrorCode.PAYMENT_DECLINED,
        "testmode_decline": ErrorCode.PAYMENT_DECLINED,
        "transaction_not_allowed": ErrorCode.PAYMENT_DECLINED,
        "try_again_later": ErrorCode.PAYMENT_DECLINED,
        "withdrawal_count_limit_exceeded": ErrorCode.INSUFFICIENT_FUNDS,
    }
)

# Stripe's error ``code`` values that come on a card error (HTTP 402) or on a PaymentIntent's
# ``last_payment_error``; used when there is no ``decline_code``, or an unknown one.
CARD_ERROR_CODES: Final[Mapping[str, ErrorCode]] = MappingProxyType(
    {
        "authentication_required": ErrorCode.PAYMENT_DECLINED,
        "card_decline_rate_limit_exceeded": ErrorCode.PAYMENT_DECLINED,
        "card_declined": ErrorCode.PAYMENT_DECLINED,
        "expired_card": ErrorCode.PAYMENT_DECLINED,
        "incorrect_address": ErrorCode.INVALID_ACCOUNT,
        "incorrect_cvc": ErrorCode.INVALID_ACCOUNT,
        "incorrect_number": ErrorCode.INVALID_ACCOUNT,
        "incorrect_zip": ErrorCode.INVALID_ACCOUNT,
        "insufficient_funds": ErrorCode.INSUFFICIENT_FUNDS,
        "invalid_account": ErrorCode.INVALID_ACCOUNT,
        "invalid_cvc": ErrorCode.INVALID_ACCOUNT,
        "invalid_expiry_month": ErrorCode.INVALID_ACCOUNT,
        "invalid_expiry_year": ErrorCode.INVALID_ACCOUNT,
        "invalid_number": ErrorCode.INVALID_ACCOUNT,
        "payment_intent_authentication_failure": ErrorCode.PAYMENT_DECLINED,
        "payment_intent_payment_attempt_failed": ErrorCode.PAYMENT_DECLINED,
        "payment_method_provider_decline": ErrorCode.PAYMENT_DECLINED,
        "processing_error": ErrorCode.PAYMENT_DECLINED,
    }
)

# A code we do not know still arrived on a decline: certainly not charged, and resending
# will not help, which is what a generic decline says.
UNKNOWN_DECLINE_CODE: Final = ErrorCode.PAYMENT_DECLINED

# ``cancellation_reason`` of a canceled PaymentIntent: nothing was captured. For a charge
# (the PaymentIntent was canceled before paygate heard it authorized) the reason becomes the
# decline's code; for an authorization, CANCELED or EXPIRED is what the port reports.
CANCELLATION_REASONS: Final[Mapping[str, ErrorCode]] = MappingProxyType(
    {
        "abandoned": ErrorCode.PAYMENT_DECLINED,
        "automatic": ErrorCode.PAYMENT_DECLINED,
        "duplicate": ErrorCode.PAYMENT_DECLINED,
        "expired": ErrorCode.PAYMENT_DECLINED,
        "failed_invoice": ErrorCode.PAYMENT_DECLINED,
        "fraudulent": ErrorCode.FRAUD_SUSPECTED,
        "requested_by_customer": ErrorCode.PAYMENT_DECLINED,
        "void_invoice": ErrorCode.PAYMENT_DECLINED,
    }
)

# Stripe cancels an uncaptured PaymentIntent on its own when the authorization's hold ends:
# ``automatic`` (``expired`` is listed by the API too, and means the same to paygate).
EXPIRY_REASONS: Final = frozenset({"automatic", "expired"})

# Codes of an invalid request (HTTP 400) that say something about the payment itself, so the
# client can act on them. Any other invalid request is StripeRequestRejectedError.
REQUEST_ERROR_CODES: Final[Mapping[str, ErrorCode]] = MappingProxyType(
    {
        "amount_too_large": ErrorCode.INVALID_AMOUNT,
        "amount_too_small": ErrorCode.INVALID_AMOUNT,
    }
)


def error_code_from_stripe(decline_code: str | None, code: str | None) -> ErrorCode:
    """The issuer's ``decline_code`` is the more specific; Stripe's ``code`` comes next."""
    if decline_code is not None and decline_code in DECLINE_CODES:
        return DECLINE_CODES[decline_code]
    if code is not None and code in CARD_ERROR_CODES:
        return CARD_ERROR_CODES[code]
    return UNKNOWN_DECLINE_CODE


def _decline_error(decline_code: str | None, code: str | None, message: str | None) -> PaygateError:
    # Stripe's card-error messages ("Your card was declined.") never hold card numbers.
    return PaygateError(
        error_code_from_stripe(decline_code, code),
        message or "Stripe declined the payment",
        decline_code=decline_code or code,
    )


# --- the request ---------------------------------------------------------------------------


def charge_params(request: ChargeRequest) -> PaymentIntentCreateParams:
    """A PaymentIntent created and confirmed in one call.

    Only a Stripe payment method (``pm_...``, account type ``token``) can be charged: raw
    card numbers must never reach paygate's Stripe account, and bank accounts or IBANs need
    flows (mandates) this adapter does not implement. Anything else is the payer's account
    that Stripe cannot use: ``invalid_account``, raised before any call, so never charged.
    Likewise an amount Stripe cannot take exactly (:mod:`providers.stripe.amounts`):
    ``invalid_amount``.
    """
    if request.payer.type is not AccountType.TOKEN:
        raise PaygateError(
            ErrorCode.INVALID_ACCOUNT,
            "the Stripe provider charges only Stripe payment methods: send the payer account "
            f"with type {AccountType.TOKEN.value!r} and a payment method id such as pm_...",
            param="payerAccount.type",
        )
    params: PaymentIntentCreateParams = {
        "amount": to_stripe_amount(request.amount),
        "currency": request.amount.currency.lower(),
        "payment_method": request.payer.number,
        "confirm": True,
        # No customer is present to follow a redirect, and without this Stripe would ask
        # for a return_url when confirming.
        "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
        "metadata": {
            PAYMENT_REQUEST_ID_KEY: request.payment_request_id,
            ATTEMPT_KEY_METADATA_KEY: request.attempt_key,
        },
    }
    if not request.capture:
        # Only when asked: a captured charge's request stays what it was, so resending an
        # older attempt under its key is not an idempotency conflict.
        params["capture_method"] = "manual"
    return params


def search_query_for(attempt_key: str) -> str:
    """Stripe Search Query Language: the PaymentIntents created for this attempt."""
    escaped = attempt_key.replace("\\", "\\\\").replace("'", "\\'")
    return f"metadata['{ATTEMPT_KEY_METADATA_KEY}']:'{escaped}'"


def attempt_key_of(intent: stripe.PaymentIntent | stripe.Charge) -> str | None:
    """The attempt key paygate put in the PaymentIntent's metadata (:func:`charge_params`);
    None for a PaymentIntent paygate did not create (no such key, or not a text). A Charge
    a PaymentIntent made carries it too: Stripe copies the PaymentIntent's metadata to the
    Charge when the PaymentIntent is confirmed (once; paygate never changes it after)."""
    try:
        # A StripeObject: indexing, since it refuses dict methods such as get().
        found = _field(intent, "metadata")[ATTEMPT_KEY_METADATA_KEY]
    except (KeyError, TypeError):
        return None
    return found if isinstance(found, str) and found else None


# --- the answer ----------------------------------------------------------------------------


class _Kind(Enum):
    SUCCEEDED = "succeeded"
    AUTHORIZED = "authorized"
    CANCELED = "canceled"
    NEEDS_PAYMENT_METHOD = "needs_payment_method"
    NOT_FINAL = "not_final"


# Every status the SDK's PaymentIntent type lists; a unit test checks it stays so.
PAYMENT_INTENT_STATUSES: Final[Mapping[str, _Kind]] = MappingProxyType(
    {
        "succeeded": _Kind.SUCCEEDED,
        "canceled": _Kind.CANCELED,
        "requires_payment_method": _Kind.NEEDS_PAYMENT_METHOD,
        "processing": _Kind.NOT_FINAL,
        "requires_action": _Kind.NOT_FINAL,
        "requires_confirmation": _Kind.NOT_FINAL,
        # Authorized, waiting for a capture: what a charge with capture=False asks for. Not
        # final for a charge that asked to capture at once: held_for_a_capture_at_once.
        "requires_capture": _Kind.AUTHORIZED,
    }
)


def _field(obj: object, name: str) -> Any:
    """A field of an SDK object, None when absent (the SDK raises AttributeError)."""
    return getattr(obj, name, None)


def _text(obj: object, name: str) -> str:
    value = _field(obj, name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"the PaymentIntent has no {name}")
    return value


# The one ``capture_method`` paygate sends: for a charge asked with capture=False
# (charge_params). Any other (Stripe's default, ``automatic`` or ``automatic_async``) is a
# charge the client asked to capture at once.
MANUAL_CAPTURE: Final = "manual"


def held_for_a_capture_at_once(intent: stripe.PaymentIntent) -> bool:
    """The PaymentIntent waits for a capture (``requires_capture``) though paygate asked
    Stripe to capture it at once (no ``capture_method=manual``).

    Such a charge is not what the client asked for: the money is held, not taken. Recorded
    ``authorized``, nobody would capture it (the client asked for a charge, not an
    authorization), the customer's money would stay held and the merchant unpaid until the
    hold ran out. So every reader of a PaymentIntent -- the charge call, the status lookups
    of the reconciler, the stray-charge sweep, the expiry sweep and the settlement command,
    and the webhook reader -- takes it as not final (outcome unknown, the payment stays
    pending) through :func:`outcome_from_intent`, whose error names the PaymentIntent as
    a hold (``held_reference``): the stray-charge sweep voids one the payment does not
    stand on, as it voids a stray authorization. The PaymentIntent itself says which
    capture was asked, so this needs nothing of the payment's row. A missing
    ``capture_method`` is read the same way: only an explicit ``manual`` is an
    authorization paygate asked for.
    """
    waiting: bool = _field(intent, "status") == "requires_capture"
    manual: bool = _field(intent, "capture_method") == MANUAL_CAPTURE
    return waiting and not manual


def outcome_from_intent(intent: stripe.PaymentIntent) -> ChargeOutcome:
    """The outcome of a PaymentIntent. Raises StripePaymentPendingError if it is not final
    (a capture-at-once charge waiting for a capture included: held_for_a_capture_at_once),
    and ValueError if it lacks an id or a status."""
    intent_id, status = _text(intent, "id"), _text(intent, "status")
    kind = PAYMENT_INTENT_STATUSES.get(status, _Kind.NOT_FINAL)
    if held_for_a_capture_at_once(intent):
        raise StripePaymentPendingError(
            PROVIDER_NAME,
            f"PaymentIntent {intent_id} waits for a capture though asked to capture at once; "
            "outcome unknown",
            intent_id=intent_id,
            status=status,
            held=True,
        )
    if kind is _Kind.SUCCEEDED:
        return ChargeOutcome(
            ChargeStatus.SUCCEEDED,
            intent_id,
            captured=_captured(intent),
            refunded=_refunded(intent),
        )
    if kind is _Kind.AUTHORIZED:
        return ChargeOutcome(ChargeStatus.AUTHORIZED, intent_id)
    if kind is _Kind.CANCELED:
        reason = _field(intent, "cancellation_reason")
        code = CANCELLATION_REASONS.get(reason or "", UNKNOWN_DECLINE_CODE)
        error = PaygateError(
            code, f"the PaymentIntent was canceled ({reason or 'no reason given'})"
        )
        # The error stays on both: a charge answered either way has failed, with it.
        status = ChargeStatus.EXPIRED if reason in EXPIRY_REASONS else ChargeStatus.CANCELED
        return ChargeOutcome(status, intent_id, error)
    if kind is _Kind.NEEDS_PAYMENT_METHOD:
        last_error = _field(intent, "last_payment_error")
        if last_error:
            error = _decline_error(
                _field(last_error, "decline_code"),
                _field(last_error, "code"),
                _field(last_error, "message"),
            )
            return ChargeOutcome(ChargeStatus.DECLINED, intent_id, error)
        why = "no payment attempt recorded yet"
    else:
        why = "not final"
    raise StripePaymentPendingError(
        PROVIDER_NAME,
        f"PaymentIntent {intent_id} is {status} ({why}); outcome unknown",
        intent_id=intent_id,
        status=status,
    )


def _captured(intent: stripe.PaymentIntent) -> Money | None:
    """What a succeeded PaymentIntent collected (``amount_received``: less than ``amount``
    after a partial capture, by paygate or by hand in the Dashboard); None when the answer
    does not say it readably. Read where paygate must learn what the provider holds (a
    void refused because the charge was captured without paygate)."""
    try:
        return money_from_stripe(_field(intent, "amount_received"), _field(intent, "currency"))
    except ValueError:
        return None


def _refunded(intent: stripe.PaymentIntent) -> Money | None:
    """What was refunded of a succeeded PaymentIntent's capture in all (its ``latest_charge``'s
    ``amount_refunded``, paygate's refunds and any made in the Dashboard, less what a partial
    capture released, as :func:`refunded_of_capture` reads a ``charge.refunded`` event), when
    the charge came expanded (``charge_by_reference`` asks for it) and says it readably; else
    None."""
    charge = _field(intent, "latest_charge")
    if charge is None or isinstance(charge, str):
        return None
    try:
        return refunded_of_capture(
            _field(charge, "amount"),
            _field(charge, "amount_captured"),
            _field(charge, "amount_refunded"),
            _field(intent, "currency"),
        )
    except ValueError:
        return None


def refunded_of_capture(
    amount: object, amount_captured: object, amount_refunded: object, currency: object
) -> Money | None:
    """What was refunded of what a charge of ``amount`` captured (``amount_captured``):
    its ``amount_refunded`` less what a partial capture released (``amount`` less
    ``amount_captured``), which Stripe counts in ``amount_refunded`` too, as it counts a
    whole released authorization's. None when nothing can be a refund of the capture.
    Taking the release off may count less than was refunded of the capture, never more
    (more would keep from the payer money paygate then refuses to refund; less only lets a
    refund through paygate ask Stripe for more than the charge keeps, which Stripe
    refuses). Raises ValueError for amounts it cannot read."""
    authorized = money_from_stripe(amount, currency)
    captured = money_from_stripe(amount_captured, currency)
    released = max(authorized.minor_units - captured.minor_units, 0)
    # Nothing refunded is no amount (Money is positive).
    refunded = money_from_stripe(amount_refunded, currency) if amount_refunded else None
    left = (0 if refunded is None else refunded.minor_units) - released
    return Money(left, captured.currency) if left > 0 else None


def intent_id_of_charge(charge: stripe.Charge) -> str | None:
    """The PaymentIntent a Charge belongs to (``payment_intent``: its id, or the object when
    expanded); None for a charge no PaymentIntent made (never one of paygate's)."""
    intent = _field(charge, "payment_intent")
    if intent is not None and not isinstance(intent, str):
        intent = _field(intent, "id")
    return intent if isinstance(intent, str) and intent else None


def outcome_from_refunded_charge(charge: stripe.Charge) -> ChargeOutcome | None:
    """What a Charge of a ``charge.refunded`` event says of its PaymentIntent: succeeded,
    ``captured`` its ``amount_captured`` and ``refunded`` its ``amount_refunded`` less what a
    partial capture released (:func:`refunded_of_capture`) -- the charge's refunds in
    all, paygate's own through the API and any made in the Dashboard
    (domain.provider_refunds takes from it only what cannot be paygate's). None for a
    charge that captured nothing (an authorization released: "refunded" in Stripe's
    words, a void in paygate's, which ``payment_intent.canceled`` reports). Raises
    ValueError for a Charge without its PaymentIntent or with amounts it cannot read."""
    intent_id = intent_id_of_charge(charge)
    if intent_id is None:
        raise ValueError("the Charge has no PaymentIntent")
    if _field(charge, "status") != "succeeded" or _field(charge, "captured") is not True:
        return None
    currency = _field(charge, "currency")
    captured_amount = _field(charge, "amount_captured")
    captured = money_from_stripe(captured_amount, currency)
    refunded = refunded_of_capture(
        _field(charge, "amount"), captured_amount, _field(charge, "amount_refunded"), currency
    )
    return ChargeOutcome(ChargeStatus.SUCCEEDED, intent_id, captured=captured, refunded=refunded)


def outcome_from_search(intents: Iterable[stripe.PaymentIntent]) -> ChargeOutcome | None:
    """One attempt key makes at most one PaymentIntent while Stripe keeps the idempotency key
    (24 hours). Should there ever be more, a succeeded one wins (money moved), else the
    newest speaks for the attempt."""
    found = sorted(intents, key=lambda intent: _field(intent, "created") or 0, reverse=True)
    if not found:
        return None
    succeeded = [intent for intent in found if _field(intent, "status") == "succeeded"]
    return outcome_from_intent(succeeded[0] if succeeded else found[0])


def outcome_from_card_error(exc: stripe.CardError) -> ChargeOutcome:
    """A card error (HTTP 402) is a decline: nothing was charged, and it is final for this
    attempt. The PaymentIntent it names, if any, is the provider reference."""
    error = exc.error
    intent = error.payment_intent if error is not None else None
    decline_code = error.decline_code if error is not None else None
    return ChargeOutcome(
        ChargeStatus.DECLINED,
        _field(intent, "id"),
        _decline_error(decline_code, exc.code, exc.user_message),
    )


# --- the SDK's exceptions ------------------------------------------------------------------

# Raised by aiohttp before a byte of the request left: certainly not charged.
_NOT_SENT: Final = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


def _retry_after(exc: stripe.StripeError) -> float | None:
    # Bounded and parsed like every provider's wait: see providers.retry_after.
    return parse_retry_after((exc.headers or {}).get("retry-after"))


def _summary(exc: stripe.StripeError) -> str:
    status = exc.http_status if exc.http_status is not None else "no HTTP status"
    return f"{type(exc).__name__} ({status}, code {exc.code}): {exc.user_message}"


def error_from_stripe(exc: stripe.StripeError) -> ProviderError | PaygateError:
    """Our error for an SDK exception, most specific first. The adapter raises it ``from``
    ``exc``. A CardError is not an error for paygate: see :func:`outcome_from_card_error`;
    if one reaches this function (outside a charge) it is read as an unknown outcome.

    The question behind each line is "could Stripe have charged?":

    - APIConnectionError: the SDK wraps every aiohttp error in it, keeping the original as
      ``__cause__``. A refused or timed-out connect (aiohttp's ClientConnectorError,
      ConnectionTimeoutError) happens before sending: not charged, ProviderUnavailableError.
      Anything else (read timeout, connection reset after sending): ProviderTimeoutError.
    - RateLimitError (429): refused before processing: ProviderRateLimitedError.
    - AuthenticationError / PermissionError: StripeAuthenticationError (not charged, not
      retriable).
    - IdempotencyError: StripeIdempotencyConflictError (outcome unknown: the first use of
      the key may have charged).
    - InvalidRequestError (400/404): nothing charged. An unknown payment method is the
      payer's ``invalid_account``; a too small or too large amount ``invalid_amount``
      (PaygateError, final); anything else StripeRequestRejectedError.
    - APIError (5xx, 409 "key in use by a request in progress", an unreadable answer) and
      any other StripeError: ProviderTimeoutError, since Stripe may have charged.
    """
    summary = _summary(exc)
    if isinstance(exc, stripe.APIConnectionError):
        if isinstance(exc.__cause__, _NOT_SENT):
            return ProviderUnavailableError(
                PROVIDER_NAME,
                f"could not connect to Stripe ({type(exc.__cause__).__name__}); not charged",
            )
        return ProviderTimeoutError(
            PROVIDER_NAME, f"the connection to Stripe failed ({summary}); outcome unknown"
        )
    if isinstance(exc, stripe.RateLimitError):
        return ProviderRateLimitedError(PROVIDER_NAME, summary, retry_after=_retry_after(exc))
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return StripeAuthenticationError(PROVIDER_NAME, f"credentials refused: {summary}")
    if isinstance(exc, stripe.IdempotencyError):
        return StripeIdempotencyConflictError(
            PROVIDER_NAME,
            f"the attempt key was first used with other parameters ({summary}); outcome unknown",
        )
    if isinstance(exc, stripe.InvalidRequestError):
        if exc.param == "payment_method":
            return PaygateError(
                ErrorCode.INVALID_ACCOUNT,
                "Stripe does not know the payer's payment method",
                param="payerAccount.number",
            )
        known = REQUEST_ERROR_CODES.get(exc.code or "")
        if known is not None:
            return PaygateError(known, exc.user_message or "Stripe refused the amount")
        return StripeRequestRejectedError(PROVIDER_NAME, f"request rejected: {summary}")
    return ProviderTimeoutError(PROVIDER_NAME, f"{summary}; outcome unknown")
