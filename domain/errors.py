"""The error catalogue: one stable code per failure, shared by REST responses and result events.

Exception tree::

    PaygateError                 any failure that has a catalogue code
    └── (raised with a code; category, retryable and HTTP status come from the catalogue)

Callers decide what to do from the code's attributes (``retryable``, ``category``), never
from the message text, which is for humans and may be reworded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final


class ErrorCategory(StrEnum):
    INVALID_REQUEST = "invalid_request"
    AUTHENTICATION = "authentication"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    DECLINED = "declined"
    PROVIDER = "provider"
    RATE_LIMIT = "rate_limit"
    INVALID_MESSAGE = "invalid_message"
    INTERNAL = "internal"


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    INVALID_AMOUNT = "invalid_amount"
    UNSUPPORTED_CURRENCY = "unsupported_currency"
    INVALID_TEXT = "invalid_text"
    REQUEST_TOO_LARGE = "request_too_large"
    REQUEST_TIMEOUT = "request_timeout"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    AUTHENTICATION_FAILED = "authentication_failed"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    ORDER_ALREADY_PAID = "order_already_paid"
    NEW_ATTEMPT_REQUIRED = "new_attempt_required"
    PAYMENT_DECLINED = "payment_declined"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    INVALID_ACCOUNT = "invalid_account"
    FRAUD_SUSPECTED = "fraud_suspected"
    PAYMENT_NOT_REFUNDABLE = "payment_not_refundable"
    PAYMENT_NOT_CAPTURABLE = "payment_not_capturable"
    REFUND_EXCEEDS_CAPTURED = "refund_exceeds_captured"
    CURRENCY_MISMATCH = "currency_mismatch"
    REFUND_FAILED = "refund_failed"
    REFUND_FAILED_AFTER_SUCCESS = "refund_failed_after_success"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    PROVIDER_TIMEOUT = "provider_timeout"
    RATE_LIMITED = "rate_limited"
    MALFORMED_MESSAGE = "malformed_message"
    UNKNOWN_SCHEMA = "unknown_schema"
    SERVICE_UNAVAILABLE = "service_unavailable"
    INTERNAL_ERROR = "internal_error"
    WEBHOOK_URL_REFUSED = "webhook_url_refused"
    PAYMENT_EXPIRED = "payment_expired"
    PAYMENT_METHOD_NOT_FOUND = "payment_method_not_found"
    CLIENT_SHREDDED = "client_shredded"
    ACCOUNT_DATA_TAMPERED = "account_data_tampered"
    ENCRYPTION_KEY_UNKNOWN = "encryption_key_unknown"
    ENCRYPTION_KEY_MISMATCH = "encryption_key_mismatch"
    CAPTURE_EXCEEDS_AUTHORIZED = "capture_exceeds_authorized"
    PAYMENT_NOT_CANCELABLE = "payment_not_cancelable"
    SETTLED_BY_OPERATOR = "settled_by_operator"
    NOT_WITHHELD = "not_withheld"
    PAYMENT_ALREADY_CAPTURED = "payment_already_captured"
    PAYMENT_ALREADY_CANCELED = "payment_already_canceled"
    ACCOUNT_NUMBER_IN_TEXT = "account_number_in_text"


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """What a code means and how a client should react to it."""

    code: ErrorCode
    category: ErrorCategory
    retryable: bool
    http_status: int
    meaning: str
    action: str


_C = ErrorCategory
_E = ErrorCode

# Each code's entry, by name: the enum above lists the codes, this says what each means;
# the check below refuses a code with no entry or two, at import.
_SPECS: Final = (
    ErrorSpec(
        code=_E.INVALID_REQUEST,
        category=_C.INVALID_REQUEST,
        retryable=False,
        http_status=400,
        meaning="The request is malformed: bad JSON, a missing, unknown or ill-typed field.",
        action="Fix the field named in `param` and send again; the same request again gets "
        "the same answer.",
    ),
    ErrorSpec(
        code=_E.INVALID_AMOUNT,
        category=_C.INVALID_REQUEST,
        retryable=False,
        http_status=400,
        meaning="The amount is not a positive decimal string with at most the currency's "
        "number of decimal places.",
        action='Send the amount as a string such as "10.50".',
    ),
    ErrorSpec(
        code=_E.UNSUPPORTED_CURRENCY,
        category=_C.INVALID_REQUEST,
        retryable=False,
        http_status=400,
        meaning="The currency is not an ISO 4217 code with minor units.",
        action='Send an upper-case ISO 4217 code such as "EUR".',
    ),
    ErrorSpec(
        code=_E.INVALID_TEXT,
        category=_C.INVALID_REQUEST,
        retryable=False,
        http_status=400,
        meaning="A text field holds a character no text may hold: a control character "
        "(U+0000 to U+001F, U+007F to U+009F), an unpaired surrogate or a Unicode "
        "non-character.",
        action="Remove the character (the message gives its position) from the field named "
        "in `param` and send again.",
    ),
    ErrorSpec(
        code=_E.REQUEST_TOO_LARGE,
        category=_C.INVALID_REQUEST,
        retryable=False,
        http_status=413,
        meaning="The request body is larger than 64 KiB.",
        action="Send a smaller body; metadata is the usual culprit.",
    ),
    ErrorSpec(
        code=_E.REQUEST_TIMEOUT,
        category=_C.INVALID_REQUEST,
        retryable=True,
        http_status=408,
        meaning="The request body did not arrive in time; the connection is closed.",
        action="Send the whole body promptly; retrying with the same Idempotency-Key is safe.",
    ),
    ErrorSpec(
        code=_E.UNSUPPORTED_MEDIA_TYPE,
        category=_C.INVALID_REQUEST,
        retryable=False,
        http_status=415,
        meaning="The body is not sent as application/json.",
        action="Set Content-Type: application/json.",
    ),
    ErrorSpec(
        code=_E.AUTHENTICATION_FAILED,
        category=_C.AUTHENTICATION,
        retryable=False,
        http_status=401,
        meaning="The API key is missing, unknown or revoked.",
        action="Send a valid key as `Authorization: Bearer <key>`.",
    ),
    ErrorSpec(
        code=_E.NOT_FOUND,
        category=_C.NOT_FOUND,
        retryable=False,
        http_status=404,
        meaning="No such resource is visible to this client (on Kafka: no such payment in "
        "the command's order and client scope).",
        action="Check the id and the API key: another client's ids are not found. A payment "
        "or refund just accepted (202) is not found until it is processed: poll, or "
        "create it with `Prefer: wait=N`. A Kafka refund or capture must carry its "
        "payment's `clientId` (null for an upstream service's payment).",
    ),
    ErrorSpec(
        code=_E.METHOD_NOT_ALLOWED,
        category=_C.INVALID_REQUEST,
        retryable=False,
        http_status=405,
        meaning="The path does not accept this HTTP method.",
        action="Use a method listed in the Allow header.",
    ),
    ErrorSpec(
        code=_E.IDEMPOTENCY_CONFLICT,
        category=_C.CONFLICT,
        retryable=False,
        http_status=409,
        meaning="The idempotency key was already used for this order (or, on a refund, this "
        "payment) with different parameters.",
        action="To learn that request's outcome, send the parameters first used with this "
        "key. A different request needs a new Idempotency-Key (order protection "
        "still applies).",
    ),
    ErrorSpec(
        code=_E.ORDER_ALREADY_PAID,
        category=_C.CONFLICT,
        retryable=False,
        http_status=409,
        meaning="The order already has a payment that succeeded, is authorized, or whose "
        "outcome is not known yet.",
        action="Do not charge the order again: list its payments (`GET "
        "/v1/payments?orderId=...`). Refund a succeeded one if needed, capture an "
        "authorized one; a pending one becomes final by itself, and only if it fails "
        "may a new attempt follow.",
    ),
    ErrorSpec(
        code=_E.NEW_ATTEMPT_REQUIRED,
        category=_C.CONFLICT,
        retryable=False,
        http_status=409,
        meaning="The order already has a failed payment, and this request did not say it is a "
        "new attempt.",
        action="To charge the order again, send newAttempt: true with a new idempotency key.",
    ),
    ErrorSpec(
        code=_E.PAYMENT_DECLINED,
        category=_C.DECLINED,
        retryable=False,
        http_status=402,
        meaning="The provider declined the payment.",
        action="The same Idempotency-Key replays the decline. Ask the payer for another "
        "payment method (see `decline_code`), then send a new attempt: "
        "`newAttempt: true` with a new Idempotency-Key.",
    ),
    ErrorSpec(
        code=_E.INSUFFICIENT_FUNDS,
        category=_C.DECLINED,
        retryable=False,
        http_status=402,
        meaning="The payer's account has insufficient funds.",
        action="The same Idempotency-Key replays the decline. Ask the payer for another "
        "payment method, then send a new attempt: `newAttempt: true` with a new "
        "Idempotency-Key.",
    ),
    ErrorSpec(
        code=_E.INVALID_ACCOUNT,
        category=_C.DECLINED,
        retryable=False,
        http_status=402,
        meaning="The provider does not know the payer's account.",
        action="The same Idempotency-Key replays the decline. Ask the payer to check the "
        "account details, then send a new attempt: `newAttempt: true` with a new "
        "Idempotency-Key.",
    ),
    ErrorSpec(
        code=_E.FRAUD_SUSPECTED,
        category=_C.DECLINED,
        retryable=False,
        http_status=402,
        meaning="The provider declined the payment as suspected fraud.",
        action="Do not retry (the same Idempotency-Key replays the decline); handle it "
        "through your fraud process.",
    ),
    ErrorSpec(
        code=_E.PAYMENT_NOT_REFUNDABLE,
        category=_C.CONFLICT,
        retryable=False,
        http_status=409,
        meaning="The payment has not succeeded (or is only authorized), so there is nothing "
        "to refund.",
        action="Refund only payments whose status is succeeded or partially_refunded.",
    ),
    ErrorSpec(
        code=_E.PAYMENT_NOT_CAPTURABLE,
        category=_C.CONFLICT,
        retryable=False,
        http_status=409,
        meaning="The payment is not authorized-only, so there is nothing to capture.",
        action="Capture only payments created with capture: false whose status is authorized.",
    ),
    ErrorSpec(
        code=_E.REFUND_EXCEEDS_CAPTURED,
        category=_C.CONFLICT,
        retryable=False,
        http_status=409,
        meaning="The refund would take refunds above the captured amount.",
        action="Refund at most the payment's `refundableAmount` (see `GET "
        "/v1/payments/{paymentRequestId}`).",
    ),
    ErrorSpec(
        code=_E.CURRENCY_MISMATCH,
        category=_C.INVALID_REQUEST,
        retryable=False,
        http_status=400,
        meaning="The refund's currency is not the payment's currency.",
        action="Refund in the currency the payment was made in.",
    ),
    ErrorSpec(
        code=_E.REFUND_FAILED,
        category=_C.PROVIDER,
        retryable=False,
        http_status=402,
        meaning="The provider refused the refund; no money was returned.",
        action="The same Idempotency-Key replays this failure; the payment's refundable "
        "amount is unchanged. Find out why (contact support) before refunding again "
        "with a new Idempotency-Key.",
    ),
    ErrorSpec(
        code=_E.REFUND_FAILED_AFTER_SUCCESS,
        category=_C.PROVIDER,
        retryable=False,
        http_status=402,
        meaning="The provider reported the refund succeeded, then failed it (the payer's "
        "card or account could not take it): the money went back to the merchant's "
        "balance, not to the payer.",
        action="The payment's refundable amount counts this refund's amount again. Refund "
        "it once more with a new Idempotency-Key (to another payment method if the "
        "provider's reason says the card is gone), or pay the payer back another way.",
    ),
    ErrorSpec(
        code=_E.PROVIDER_UNAVAILABLE,
        category=_C.PROVIDER,
        retryable=True,
        http_status=503,
        meaning="The provider could not be reached or could not process the request, also "
        "after paygate's own retries; nothing was charged or refunded.",
        action="The same Idempotency-Key replays this failure. Try again later as a new "
        "request: a payment as a new attempt (`newAttempt: true` with a new "
        "Idempotency-Key), a refund with a new Idempotency-Key.",
    ),
    ErrorSpec(
        code=_E.PROVIDER_TIMEOUT,
        category=_C.PROVIDER,
        retryable=True,
        http_status=504,
        meaning="The provider did not answer in time, or its answer is not final (for "
        "Stripe, a charge asked to capture at once that it only authorized: the money "
        "held, not taken, is never recorded `authorized`); the outcome is not known yet, "
        "so the payment (or refund) stays pending.",
        action="Do not send a new attempt: it may have been charged. Read it later (`GET`), "
        "or send the same request with the same Idempotency-Key and "
        "`Prefer: wait=N`; it becomes final once the provider confirms.",
    ),
    ErrorSpec(
        code=_E.RATE_LIMITED,
        category=_C.RATE_LIMIT,
        retryable=True,
        http_status=429,
        meaning="Too many requests from this client.",
        action="Wait for Retry-After seconds, then retry.",
    ),
    ErrorSpec(
        code=_E.MALFORMED_MESSAGE,
        category=_C.INVALID_MESSAGE,
        retryable=False,
        http_status=400,
        meaning="A Kafka message is not valid Confluent-framed Avro (bad magic byte, "
        "truncated or undecodable body).",
        action="Fix the producer; the message is in the dead-letter topic.",
    ),
    ErrorSpec(
        code=_E.UNKNOWN_SCHEMA,
        category=_C.INVALID_MESSAGE,
        retryable=False,
        http_status=400,
        meaning="A Kafka message names a schema id this service does not know.",
        action="Register the schema or fix the producer; the message is in the dead-letter topic.",
    ),
    ErrorSpec(
        code=_E.SERVICE_UNAVAILABLE,
        category=_C.INTERNAL,
        retryable=True,
        http_status=503,
        meaning="paygate could not reach Kafka or its database in time; the request may or "
        "may not have been accepted.",
        action="Wait `Retry-After` seconds, then retry with the same Idempotency-Key: it is "
        "the same payment (or refund), never a second one, and the retry answers "
        "it.",
    ),
    ErrorSpec(
        code=_E.INTERNAL_ERROR,
        category=_C.INTERNAL,
        retryable=True,
        http_status=500,
        meaning="An unexpected error inside paygate, or a request the provider refused as "
        "invalid (nothing was charged).",
        action="Answered 500: retry with the same Idempotency-Key, it cannot cause a second "
        "payment. A payment or refund that failed with it replays with that key: "
        "send a new one (new key; `newAttempt: true` for a payment) and report it.",
    ),
    ErrorSpec(
        code=_E.WEBHOOK_URL_REFUSED,
        category=_C.INVALID_REQUEST,
        retryable=False,
        http_status=400,
        meaning="A webhook endpoint URL is not `https`, carries credentials, or its host is "
        "(or resolves to) a private, loopback, link-local or otherwise non-public address; "
        "nothing was registered.",
        action="Register a public `https` URL whose host resolves only to public addresses.",
    ),
    ErrorSpec(
        code=_E.PAYMENT_EXPIRED,
        category=_C.DECLINED,
        retryable=False,
        http_status=402,
        meaning="The payer did not complete the required action (3-D Secure, scanning the "
        "QR code) before it expired; the provider closed the payment and nothing was charged.",
        action="The same Idempotency-Key replays the expiry. To try again, send a new "
        "attempt: `newAttempt: true` with a new Idempotency-Key.",
    ),
    ErrorSpec(
        code=_E.PAYMENT_METHOD_NOT_FOUND,
        category=_C.NOT_FOUND,
        retryable=False,
        http_status=404,
        meaning="No stored payment method has this token for this client: it never existed, "
        "was deleted (its number is gone for good), expired under the retention, or belongs "
        "to another client. Nothing was sent to a provider.",
        action="Tokenize the account again (`POST /v1/payment_methods`) and pay with the new "
        "token; a command that came by Kafka is in the dead-letter topic.",
    ),
    ErrorSpec(
        code=_E.CLIENT_SHREDDED,
        category=_C.AUTHENTICATION,
        retryable=False,
        http_status=403,
        meaning="The operator shredded this client's stored payment methods (`paygate keys "
        "shred-client`): no account number can be stored for it any more, so the request "
        "was refused before anything was stored, published or sent to a provider. Its API "
        "keys were revoked; a facade may still accept one for up to its login cache's "
        "lifetime, and this is what it answers then.",
        action="Do not retry: the client is closed. An operator who reopens it runs `paygate "
        "keys unshred-client` and issues new API keys; a command that came by Kafka is in "
        "the dead-letter topic.",
    ),
    ErrorSpec(
        code=_E.ACCOUNT_DATA_TAMPERED,
        category=_C.INVALID_MESSAGE,
        retryable=False,
        http_status=422,
        meaning="An encrypted account number does not authenticate (AES-GCM): its "
        "ciphertext, nonce or the data bound to it was altered, or it was moved to another "
        "token. Nothing was decrypted or sent to a provider.",
        action="Do not retry: report it as a security incident; the message is in the "
        "dead-letter topic.",
    ),
    ErrorSpec(
        code=_E.ENCRYPTION_KEY_UNKNOWN,
        category=_C.INVALID_MESSAGE,
        retryable=False,
        http_status=422,
        meaning="An encrypted account number names a key id paygate does not hold: a retired "
        "data key, a key-encryption key that is not configured, or a public key paygate "
        "never published. Nothing was sent to a provider.",
        action="Configure the missing key (or encrypt to the current public key, "
        "`GET /v1/payment_methods/encryption_key`); the message is in the dead-letter topic.",
    ),
    ErrorSpec(
        code=_E.ENCRYPTION_KEY_MISMATCH,
        category=_C.INVALID_MESSAGE,
        retryable=False,
        http_status=422,
        meaning="The key with the named id does not open the value: a key-encryption key "
        "configured under an id that belongs to another key, or a number encrypted to "
        "another public key. Nothing was sent to a provider.",
        action="Configure the right key under that id (or encrypt to the current public "
        "key); the message is in the dead-letter topic.",
    ),
    ErrorSpec(
        code=_E.CAPTURE_EXCEEDS_AUTHORIZED,
        category=_C.CONFLICT,
        retryable=False,
        http_status=409,
        meaning="The capture asks for more than the authorization holds. Nothing was captured.",
        action="Capture at most the payment's `amount`; leave `amount` out to capture all of it.",
    ),
    ErrorSpec(
        code=_E.PAYMENT_NOT_CANCELABLE,
        category=_C.CONFLICT,
        retryable=False,
        http_status=409,
        meaning="Only an authorized payment can be canceled: this one is being captured, was "
        "captured, expired, failed, or was never only authorized.",
        action="Refund a captured payment instead; a canceled or expired one holds nothing.",
    ),
    ErrorSpec(
        code=_E.SETTLED_BY_OPERATOR,
        category=_C.PROVIDER,
        retryable=False,
        http_status=502,
        meaning="The payment (or refund) stayed in doubt past its provider's idempotency "
        "window and an operator, having checked that the provider holds nothing under its "
        "key, failed it (`paygate reconcile settle`); the message carries their reason. "
        "Nothing was charged or refunded.",
        action="The same Idempotency-Key replays this failure. To try again, send a new "
        "attempt: a payment with `newAttempt: true` and a new Idempotency-Key, a refund "
        "with a new Idempotency-Key.",
    ),
    ErrorSpec(
        code=_E.NOT_WITHHELD,
        category=_C.CONFLICT,
        retryable=False,
        http_status=409,
        meaning="`paygate reconcile settle` acts only on a payment or refund paygate "
        "withholds: pending (or waiting for a payer paygate has no action to show), its "
        "call in doubt and older than its provider's idempotency window less the margin. "
        "This one is not (final, still inside the window, its provider keeps keys for good, "
        "its payer was shown an action the reconciler follows, or another worker holds it "
        "now), or, asked to fail it, a late re-send of its key may still reach its "
        "provider or not show in its status search yet (until the window's end plus the "
        "search's lag); nothing was changed.",
        action="Leave it to the reconciler, which settles it from the provider's answer; "
        "for one in another worker's hands, or that may not be failed yet, run the command "
        "again later (the message says when).",
    ),
    ErrorSpec(
        code=_E.PAYMENT_ALREADY_CAPTURED,
        category=_C.CONFLICT,
        retryable=False,
        http_status=409,
        meaning="The cancel reached the provider after the authorization had been captured "
        "there (for example by hand in the provider's dashboard). Nothing was voided: the "
        "payment is now recorded `succeeded`, with the amount the provider captured.",
        action="Read the payment: its status and `capturedAmount` are the provider's. Refund "
        "it to return the money.",
    ),
    ErrorSpec(
        code=_E.PAYMENT_ALREADY_CANCELED,
        category=_C.CONFLICT,
        retryable=False,
        http_status=409,
        meaning="The capture reached the provider after the authorization had been released "
        "there (voided outside paygate, or its hold ran out). Nothing was captured: the "
        "payment is now recorded `canceled` (or `expired`).",
        action="This payment holds nothing. To take the money, send a new attempt: "
        "`newAttempt: true` with a new Idempotency-Key.",
    ),
    ErrorSpec(
        code=_E.ACCOUNT_NUMBER_IN_TEXT,
        category=_C.INVALID_REQUEST,
        retryable=False,
        http_status=400,
        meaning="A free-text field (a metadata key or value, an account's holderName, a "
        "webhook endpoint's url or description) or a Kafka message key that is "
        "not the command's orderId holds what looks like an account number: a card number "
        "(12 to 19 digits that start as a card network's do and pass the Luhn check) or an "
        "IBAN (that passes its mod-97 check). Account numbers are never stored in clear, so "
        "nothing was stored.",
        action="Send account numbers only as payerAccount or payeeAccount (or a token), never "
        "in metadata; key Kafka commands by their orderId.",
    ),
)
if len({spec.code for spec in _SPECS}) != len(_SPECS) or {s.code for s in _SPECS} != set(ErrorCode):
    raise RuntimeError("every error code needs exactly one catalogue entry")
CATALOGUE: Final = MappingProxyType({spec.code: spec for spec in _SPECS})


# An error's text is recorded with the outcome it explains (the store, the result event),
# and a provider's decline code and message are passed through as the provider sent them.
# Text the store or the codec cannot take made the outcome unrecordable: the write (or the
# event's encoding) failed, the command was dead-lettered with its payment (or refund)
# left in flight, and every reconciler pass or provider notice read the same answer and
# failed the same write, for ever, the order blocked meanwhile. So an error keeps
#
# * a ``decline_code`` and a ``param`` of at most the store's column widths
#   (persistence.tables; Stripe documents codes longer than 64 characters and adds new
#   ones; PostgreSQL refused them, SQLite stores any length);
# * text without U+0000 (PostgreSQL refuses it in any text) and without an unpaired
#   surrogate (no UTF-8, so neither database nor Avro can carry it; a JSON answer's
#   ``\ud83d`` escape decodes to one): each becomes U+FFFD.
MAX_DECLINE_CODE_LENGTH: Final = 64
MAX_PARAM_LENGTH: Final = 128
_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")


def storable_text(value: str) -> str:
    """``value`` with every character no store or codec can carry replaced by U+FFFD."""
    if value.isascii() and "\x00" not in value:
        return value
    return _UNSTORABLE.sub("\ufffd", value)


def bounded_text(value: str | None, limit: int) -> str | None:
    """``value`` made storable and cut to ``limit`` characters (None stays None)."""
    if value is None:
        return None
    value = storable_text(value)
    return value if len(value) <= limit else value[:limit]


class PaygateError(Exception):
    """A failure with a catalogue code. ``message`` is safe to show: it never holds account data."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        param: str | None = None,
        decline_code: str | None = None,
    ) -> None:
        message = storable_text(message)
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = bounded_text(param, MAX_PARAM_LENGTH)
        self.decline_code = bounded_text(decline_code, MAX_DECLINE_CODE_LENGTH)

    @property
    def spec(self) -> ErrorSpec:
        return CATALOGUE[self.code]

    def __repr__(self) -> str:
        return f"PaygateError({self.code.value!r}, {self.message!r}, param={self.param!r})"
