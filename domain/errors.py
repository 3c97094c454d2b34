"""The error catalogue: one stable code per failure, shared by REST responses and result events.

Exception tree::

    PaygateError                 any failure that has a catalogue code
    └── (raised with a code; category, retryable and HTTP status come from the catalogue)

Callers decide what to do from the code's attributes (``retryable``, ``category``), never
from the message text, which is for humans and may be reworded.
"""

from __future__ import annotations

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
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    PROVIDER_TIMEOUT = "provider_timeout"
    RATE_LIMITED = "rate_limited"
    MALFORMED_MESSAGE = "malformed_message"
    UNKNOWN_SCHEMA = "unknown_schema"
    SERVICE_UNAVAILABLE = "service_unavailable"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """What a code means and how a client should react to it."""

    code: ErrorCode
    category: ErrorCategory
    retryable: bool
    http_status: int
    meaning: str
    action: str


def _spec(
    code: ErrorCode,
    category: ErrorCategory,
    retryable: bool,
    http_status: int,
    meaning: str,
    action: str,
) -> tuple[ErrorCode, ErrorSpec]:
    return code, ErrorSpec(code, category, retryable, http_status, meaning, action)


_C = ErrorCategory
_E = ErrorCode

CATALOGUE: Final = MappingProxyType(
    dict(
        [
            _spec(
                _E.INVALID_REQUEST,
                _C.INVALID_REQUEST,
                False,
                400,
                "The request is malformed: bad JSON, a missing, unknown or ill-typed field.",
                "Fix the field named in `param` and send again; the same request again gets "
                "the same answer.",
            ),
            _spec(
                _E.INVALID_AMOUNT,
                _C.INVALID_REQUEST,
                False,
                400,
                "The amount is not a positive decimal string with at most the currency's "
                "number of decimal places.",
                'Send the amount as a string such as "10.50".',
            ),
            _spec(
                _E.UNSUPPORTED_CURRENCY,
                _C.INVALID_REQUEST,
                False,
                400,
                "The currency is not an ISO 4217 code with minor units.",
                'Send an upper-case ISO 4217 code such as "EUR".',
            ),
            _spec(
                _E.INVALID_TEXT,
                _C.INVALID_REQUEST,
                False,
                400,
                "A text field holds a character no text may hold: a control character "
                "(U+0000 to U+001F, U+007F to U+009F), an unpaired surrogate or a Unicode "
                "non-character.",
                "Remove the character (the message gives its position) from the field named "
                "in `param` and send again.",
            ),
            _spec(
                _E.REQUEST_TOO_LARGE,
                _C.INVALID_REQUEST,
                False,
                413,
                "The request body is larger than 64 KiB.",
                "Send a smaller body; metadata is the usual culprit.",
            ),
            _spec(
                _E.REQUEST_TIMEOUT,
                _C.INVALID_REQUEST,
                True,
                408,
                "The request body did not arrive in time; the connection is closed.",
                "Send the whole body promptly; retrying with the same Idempotency-Key is safe.",
            ),
            _spec(
                _E.UNSUPPORTED_MEDIA_TYPE,
                _C.INVALID_REQUEST,
                False,
                415,
                "The body is not sent as application/json.",
                "Set Content-Type: application/json.",
            ),
            _spec(
                _E.AUTHENTICATION_FAILED,
                _C.AUTHENTICATION,
                False,
                401,
                "The API key is missing, unknown or revoked.",
                "Send a valid key as `Authorization: Bearer <key>`.",
            ),
            _spec(
                _E.NOT_FOUND,
                _C.NOT_FOUND,
                False,
                404,
                "No such resource is visible to this client.",
                "Check the id and the API key: another client's ids are not found. A payment "
                "or refund just accepted (202) is not found until it is processed: poll, or "
                "create it with `Prefer: wait=N`.",
            ),
            _spec(
                _E.METHOD_NOT_ALLOWED,
                _C.INVALID_REQUEST,
                False,
                405,
                "The path does not accept this HTTP method.",
                "Use a method listed in the Allow header.",
            ),
            _spec(
                _E.IDEMPOTENCY_CONFLICT,
                _C.CONFLICT,
                False,
                409,
                "The idempotency key was already used for this order (or, on a refund, this "
                "payment) with different parameters.",
                "To learn that request's outcome, send the parameters first used with this "
                "key. A different request needs a new Idempotency-Key (order protection "
                "still applies).",
            ),
            _spec(
                _E.ORDER_ALREADY_PAID,
                _C.CONFLICT,
                False,
                409,
                "The order already has a payment that succeeded, is authorized, or whose "
                "outcome is not known yet.",
                "Do not charge the order again: list its payments (`GET "
                "/v1/payments?orderId=...`). Refund a succeeded one if needed, capture an "
                "authorized one; a pending one becomes final by itself, and only if it fails "
                "may a new attempt follow.",
            ),
            _spec(
                _E.NEW_ATTEMPT_REQUIRED,
                _C.CONFLICT,
                False,
                409,
                "The order already has a failed payment, and this request did not say it is a "
                "new attempt.",
                "To charge the order again, send newAttempt: true with a new idempotency key.",
            ),
            _spec(
                _E.PAYMENT_DECLINED,
                _C.DECLINED,
                False,
                402,
                "The provider declined the payment.",
                "The same Idempotency-Key replays the decline. Ask the payer for another "
                "payment method (see `decline_code`), then send a new attempt: "
                "`newAttempt: true` with a new Idempotency-Key.",
            ),
            _spec(
                _E.INSUFFICIENT_FUNDS,
                _C.DECLINED,
                False,
                402,
                "The payer's account has insufficient funds.",
                "The same Idempotency-Key replays the decline. Ask the payer for another "
                "payment method, then send a new attempt: `newAttempt: true` with a new "
                "Idempotency-Key.",
            ),
            _spec(
                _E.INVALID_ACCOUNT,
                _C.DECLINED,
                False,
                402,
                "The provider does not know the payer's account.",
                "The same Idempotency-Key replays the decline. Ask the payer to check the "
                "account details, then send a new attempt: `newAttempt: true` with a new "
                "Idempotency-Key.",
            ),
            _spec(
                _E.FRAUD_SUSPECTED,
                _C.DECLINED,
                False,
                402,
                "The provider declined the payment as suspected fraud.",
                "Do not retry (the same Idempotency-Key replays the decline); handle it "
                "through your fraud process.",
            ),
            _spec(
                _E.PAYMENT_NOT_REFUNDABLE,
                _C.CONFLICT,
                False,
                409,
                "The payment has not succeeded (or is only authorized), so there is nothing "
                "to refund.",
                "Refund only payments whose status is succeeded or partially_refunded.",
            ),
            _spec(
                _E.PAYMENT_NOT_CAPTURABLE,
                _C.CONFLICT,
                False,
                409,
                "The payment is not authorized-only, so there is nothing to capture.",
                "Capture only payments created with capture: false whose status is authorized.",
            ),
            _spec(
                _E.REFUND_EXCEEDS_CAPTURED,
                _C.CONFLICT,
                False,
                409,
                "The refund would take refunds above the captured amount.",
                "Refund at most the payment's `refundableAmount` (see `GET "
                "/v1/payments/{paymentRequestId}`).",
            ),
            _spec(
                _E.CURRENCY_MISMATCH,
                _C.INVALID_REQUEST,
                False,
                400,
                "The refund's currency is not the payment's currency.",
                "Refund in the currency the payment was made in.",
            ),
            _spec(
                _E.REFUND_FAILED,
                _C.PROVIDER,
                False,
                402,
                "The provider refused the refund; no money was returned.",
                "The same Idempotency-Key replays this failure; the payment's refundable "
                "amount is unchanged. Find out why (contact support) before refunding again "
                "with a new Idempotency-Key.",
            ),
            _spec(
                _E.PROVIDER_UNAVAILABLE,
                _C.PROVIDER,
                True,
                503,
                "The provider could not be reached or could not process the request, also "
                "after paygate's own retries; nothing was charged or refunded.",
                "The same Idempotency-Key replays this failure. Try again later as a new "
                "request: a payment as a new attempt (`newAttempt: true` with a new "
                "Idempotency-Key), a refund with a new Idempotency-Key.",
            ),
            _spec(
                _E.PROVIDER_TIMEOUT,
                _C.PROVIDER,
                True,
                504,
                "The provider did not answer in time; the outcome is not known yet, so the "
                "payment (or refund) stays pending.",
                "Do not send a new attempt: it may have been charged. Read it later (`GET`), "
                "or send the same request with the same Idempotency-Key and "
                "`Prefer: wait=N`; it becomes final once the provider confirms.",
            ),
            _spec(
                _E.RATE_LIMITED,
                _C.RATE_LIMIT,
                True,
                429,
                "Too many requests from this client.",
                "Wait for Retry-After seconds, then retry.",
            ),
            _spec(
                _E.MALFORMED_MESSAGE,
                _C.INVALID_MESSAGE,
                False,
                400,
                "A Kafka message is not valid Confluent-framed Avro (bad magic byte, "
                "truncated or undecodable body).",
                "Fix the producer; the message is in the dead-letter topic.",
            ),
            _spec(
                _E.UNKNOWN_SCHEMA,
                _C.INVALID_MESSAGE,
                False,
                400,
                "A Kafka message names a schema id this service does not know.",
                "Register the schema or fix the producer; the message is in the dead-letter topic.",
            ),
            _spec(
                _E.SERVICE_UNAVAILABLE,
                _C.INTERNAL,
                True,
                503,
                "paygate could not reach Kafka or its database in time; the request may or "
                "may not have been accepted.",
                "Wait `Retry-After` seconds, then retry with the same Idempotency-Key: it is "
                "the same payment (or refund), never a second one, and the retry answers "
                "it.",
            ),
            _spec(
                _E.INTERNAL_ERROR,
                _C.INTERNAL,
                True,
                500,
                "An unexpected error inside paygate, or a request the provider refused as "
                "invalid (nothing was charged).",
                "Answered 500: retry with the same Idempotency-Key, it cannot cause a second "
                "payment. A payment or refund that failed with it replays with that key: "
                "send a new one (new key; `newAttempt: true` for a payment) and report it.",
            ),
        ]
    )
)


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
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.decline_code = decline_code

    @property
    def spec(self) -> ErrorSpec:
        return CATALOGUE[self.code]

    def __repr__(self) -> str:
        return f"PaygateError({self.code.value!r}, {self.message!r}, param={self.param!r})"
