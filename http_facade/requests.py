"""Request bodies: JSON text -> strict pydantic models -> domain commands.

Two layers check a body. The models here check its *shape* (which fields, of which JSON
type), strictly: no coercion, so the JSON number ``0.1`` never becomes the string ``"0.1"``
after a trip through a binary float. The domain (``money_from_text``, ``Account.parse``,
``CreatePayment.create``) then checks the *values*, with the same rules the Kafka intake uses,
the text rule of ``domain.text`` included: a control character in any text field is
``400 invalid_text`` here and a dead letter with that code there.

Error messages are built from the error's kind and location only, never from the
submitted value: that value may be an account number.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Final, NoReturn

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from domain.accounts import Account
from domain.errors import ErrorCode, PaygateError
from domain.money import money_from_text
from domain.payments import CreatePayment
from domain.text import forbidden_character
from domain.vaulted import AccountToken, check_token

# A wrongly typed amount or currency is reported with the code the domain uses for any
# bad value of that field, so clients see one code per field whatever went wrong with it.
_TYPE_ERROR_CODES: Final[Mapping[str, ErrorCode]] = {
    "amount": ErrorCode.INVALID_AMOUNT,
    "currency": ErrorCode.UNSUPPORTED_CURRENCY,
}

# Messages for the error kinds a well-meaning client hits; anything rarer falls back to
# pydantic's own ``msg``, which describes the rule, not the input.
_MESSAGES: Final[Mapping[str, str]] = {
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "string_type": "must be a string",
    "model_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
}


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class AccountBody(StrictBody):
    """An account by its number (vaulted by the facade before the command is published) or
    by a token from ``POST /v1/payment_methods`` (whose type is the vault's)."""

    type: str | None = None
    number: str | None = Field(default=None, repr=False)
    token: str | None = None
    holder_name: str | None = Field(default=None, alias="holderName")

    def to_account(self, *, param: str) -> Account | AccountToken:
        if (self.number is None) == (self.token is None):
            raise PaygateError(
                ErrorCode.INVALID_REQUEST,
                f"{param} needs exactly one of number and token",
                param=param,
            )
        if self.token is not None:
            token = check_token(self.token, param=f"{param}.token")
            # The type is checked like any, but the vault's record of it wins.
            shape = Account.parse(self.type or "card", "0000", self.holder_name, param=param)
            return AccountToken(shape.type, token, shape.holder_name)
        if self.type is None:
            raise PaygateError(
                ErrorCode.INVALID_REQUEST, f"{param}.type is required", param=f"{param}.type"
            )
        return Account.parse(self.type, self.number, self.holder_name, param=param)


class PaymentMethodBody(StrictBody):
    """The body of ``POST /v1/payment_methods``."""

    type: str
    number: str = Field(repr=False)
    holder_name: str | None = Field(default=None, alias="holderName")
    # Saved for reuse: kept until deleted. Otherwise the retention shreds it.
    saved: bool = False

    def to_account(self) -> Account:
        return Account.parse(self.type, self.number, self.holder_name, param="")


def parse_payment_method_body(raw: bytes) -> PaymentMethodBody:
    document = decode_json(raw)
    if not isinstance(document, dict):
        raise PaygateError(ErrorCode.INVALID_REQUEST, "request body must be a JSON object")
    try:
        return PaymentMethodBody.model_validate(document)
    except ValidationError as exc:
        raise_first(exc)


class CreatePaymentBody(StrictBody):
    """The body of ``POST /v1/payments``; field names are the JSON (camelCase) ones."""

    user_id: str = Field(alias="userId")
    order_id: str = Field(alias="orderId")
    amount: str
    currency: str
    payment_method: str = Field(alias="paymentMethod")
    payer_account: AccountBody = Field(alias="payerAccount")
    payee_account: AccountBody = Field(alias="payeeAccount")
    metadata: dict[str, str] | None = None
    new_attempt: bool = Field(default=False, alias="newAttempt")
    capture: bool = True

    def to_command(
        self, *, idempotency_key: str, requested_at: datetime, client_id: str | None
    ) -> CreatePayment:
        """The domain command; raises :class:`PaygateError` for a value the domain refuses."""
        return CreatePayment.create(
            idempotency_key=idempotency_key,
            user_id=self.user_id,
            order_id=self.order_id,
            amount=money_from_text(self.amount, self.currency),
            payment_method=self.payment_method,
            payer=self.payer_account.to_account(param="payerAccount"),
            payee=self.payee_account.to_account(param="payeeAccount"),
            requested_at=requested_at,
            metadata=self.metadata or {},
            new_attempt=self.new_attempt,
            client_id=client_id,
            capture=self.capture,
        )


def parse_create_payment_body(raw: bytes) -> CreatePaymentBody:
    """Decode and shape-check a create-payment body, or raise :class:`PaygateError`."""
    document = decode_json(raw)
    if not isinstance(document, dict):
        raise PaygateError(ErrorCode.INVALID_REQUEST, "request body must be a JSON object")
    try:
        return CreatePaymentBody.model_validate(document)
    except ValidationError as exc:
        raise_first(exc)


def decode_json(raw: bytes) -> object:
    """Parse JSON without ever producing a float, and refuse what JSON itself does not allow."""
    try:
        return json.loads(
            raw.decode("utf-8"),
            parse_float=Decimal,
            parse_constant=_refuse_constant,
            object_pairs_hook=_object_without_duplicate_keys,
        )
    # ValueError covers JSONDecodeError, bad UTF-8 and integers too long to convert;
    # RecursionError a body of deeply nested arrays, which 64 KiB is enough to build.
    except (ValueError, RecursionError):
        raise PaygateError(
            ErrorCode.INVALID_REQUEST,
            "request body must be valid UTF-8 JSON, with no key repeated within an object",
        ) from None


def _refuse_constant(name: str) -> NoReturn:
    # Python's json accepts NaN and Infinity; JSON does not, and no amount is either.
    raise ValueError(f"{name} is not JSON")


def _object_without_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # {"amount": "1", "amount": "1000"} means different things to different parsers (first
    # wins or last wins); a payment must not depend on which one reads it.
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("duplicate key in JSON object")
    return document


def raise_first(exc: ValidationError) -> NoReturn:
    error = exc.errors(include_url=False, include_context=False, include_input=False)[0]
    param, cut = _dotted(error)
    code = ErrorCode.INVALID_REQUEST
    if error["type"].endswith("_type") and param in _TYPE_ERROR_CODES:
        code = _TYPE_ERROR_CODES[param]
    if code is ErrorCode.INVALID_AMOUNT:
        message = (
            'amount must be a string of decimal digits such as "10.50": a JSON number may '
            "already have been rounded through a binary float"
        )
    elif cut:
        # The name the rule is about was left out: the message says where it is.
        rule = _MESSAGES.get(error["type"], error["msg"])
        message = f"{param or 'the body'}: a member's name or value {rule}"
    elif error["type"] in _MESSAGES:
        message = f"{param} {_MESSAGES[error['type']]}"
    else:
        message = f"{param}: {error['msg']}"
    raise PaygateError(code, message, param=param or None) from None


def _dotted(error: ErrorDetails) -> tuple[str, bool]:
    """The error's location as a dotted param, and whether a part of it was left out."""
    # A location part can be a name the client chose (a metadata key, an unknown field):
    # the path stops before one that holds a digit, since it may be an account number
    # written any way (grouped by dots, full-width digits) no detector sees, or one the
    # text rule refuses, so an error never echoes a control character or a lone surrogate.
    # No field of a body has a digit in its name; a list index (an int) is no input.
    parts: list[str] = []
    for part in error["loc"]:
        if isinstance(part, str) and (
            forbidden_character(part) is not None or any(char.isdigit() for char in part)
        ):
            return ".".join(parts), True
        parts.append(str(part))
    return ".".join(parts), False
