"""Translation between Avro records and the domain's commands and events.

Avro guarantees types; this module applies the domain's value rules, so a message that
decodes but carries an invalid amount or currency raises the same
:class:`domain.errors.PaygateError` a REST request would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final, TypeVar

from domain.accounts import Account
from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from domain.errors import ErrorCode, PaygateError
from domain.events import PaymentResult, RefundResult, refusal_before_the_field
from domain.money import Money, money_from_decimal
from domain.payments import CreatePayment
from domain.refunds import RefundPayment
from domain.status import PaymentStatus
from domain.text import check_characters
from domain.vaulted import AccountToken, AnyAccount, EncryptedAccount, VaultedAccount, check_token
from schemas.cancels import cancel_payment_from_record, cancel_payment_to_record
from schemas.captures import capture_payment_from_record, capture_payment_to_record
from schemas.codec import (
    CANCEL_PAYMENT,
    CAPTURE_PAYMENT,
    CREATE_PAYMENT,
    PAYMENT_RESULT,
    REFUND_PAYMENT,
    REFUND_RESULT,
    AvroCodec,
    CodecError,
)
from schemas.error_records import error_from_record, error_to_record
from schemas.fields import requested_at_of
from schemas.next_action_records import next_action_from_record, next_action_to_record
from schemas.refunds import (
    refund_payment_from_record,
    refund_payment_to_record,
    refund_result_from_record,
    refund_result_to_record,
)
from schemas.registry import FileSchemaRegistry

Command = CreatePayment | RefundPayment | CapturePayment | CancelPayment
ResultEvent = PaymentResult | RefundResult
# In PaymentResult since v4 (schema id 17) and RefundResult since v2 (id 18).
REFUSAL_FIELD: Final = "refusal"
_Event = TypeVar("_Event", PaymentResult, RefundResult)


def _account(record: Mapping[str, Any], param: str) -> AnyAccount:
    """The account in whichever form the record names it: exactly one of ``token``,
    ``encrypted`` and ``number`` (records of v1 to v3 have only ``number``)."""
    forms = [name for name in ("token", "encrypted", "number") if record.get(name) is not None]
    if len(forms) != 1:
        raise PaygateError(
            ErrorCode.INVALID_REQUEST,
            "an account needs exactly one of token, encrypted and number",
            param=param,
        )
    holder = record.get("holderName")
    if forms == ["number"]:
        return Account.parse(record["type"], record["number"], holder, param=param)
    # Parsed like a clear account's, so type and holder name obey the same rules.
    shape = Account.parse(record["type"], "0000", holder, param=param)
    if forms == ["token"]:
        token = check_token(record["token"], param=f"{param}.token")
        return AccountToken(shape.type, token, shape.holder_name)
    sealed = record["encrypted"]
    check_characters(sealed["keyId"], f"{param}.encrypted.keyId")
    return EncryptedAccount(
        shape.type,
        sealed["keyId"],
        sealed["wrappedKey"],
        sealed["nonce"],
        sealed["ciphertext"],
        shape.holder_name,
    )


def create_payment_from_record(record: Mapping[str, Any]) -> CreatePayment:
    return CreatePayment.create(
        idempotency_key=record["idempotencyKey"],
        user_id=record["userId"],
        order_id=record["orderId"],
        amount=money_from_decimal(record["amount"], record["currency"]),
        payment_method=record["paymentMethod"],
        payer=_account(record["payerAccount"], "payerAccount"),
        payee=_account(record["payeeAccount"], "payeeAccount"),
        requested_at=requested_at_of(record),
        metadata=record.get("metadata") or {},
        new_attempt=bool(record.get("newAttempt", False)),
        client_id=record.get("clientId"),
        capture=bool(record.get("capture", True)),
    )


def _account_record(account: AnyAccount) -> dict[str, Any]:
    record: dict[str, Any] = {
        "type": account.type.value,
        "number": None,
        "holderName": account.holder_name,
        "token": None,
        "encrypted": None,
    }
    if isinstance(account, VaultedAccount | AccountToken):
        record["token"] = account.token
    elif isinstance(account, EncryptedAccount):
        record["encrypted"] = {
            "keyId": account.key_id,
            "wrappedKey": account.wrapped_key,
            "nonce": account.nonce,
            "ciphertext": account.ciphertext,
        }
    else:
        # Only an upstream service (or a test playing one) writes a clear number; paygate
        # itself publishes tokens (see http_facade and consumer.account_intake).
        record["number"] = account.number
    return record


def create_payment_to_record(command: CreatePayment) -> dict[str, Any]:
    return {
        "idempotencyKey": command.idempotency_key,
        "userId": command.user_id,
        "orderId": command.order_id,
        "amount": command.amount.to_decimal(),
        "currency": command.amount.currency,
        "paymentMethod": command.payment_method.value,
        "payerAccount": _account_record(command.payer),
        "payeeAccount": _account_record(command.payee),
        "metadata": dict(command.metadata),
        "requestedAt": command.requested_at,
        "newAttempt": command.new_attempt,
        "clientId": command.client_id,
        "capture": command.capture,
    }


def payment_result_to_record(event: PaymentResult) -> dict[str, Any]:
    return {
        "eventId": event.event_id,
        "paymentRequestId": event.payment_request_id,
        "orderId": event.order_id,
        "userId": event.user_id,
        "status": event.status.value,
        "paymentResult": event.payment_result,
        "amount": event.amount.to_decimal(),
        "currency": event.amount.currency,
        "provider": event.provider,
        "providerReference": event.provider_reference,
        "error": error_to_record(event.error),
        "createdAt": event.created_at,
        "occurredAt": event.occurred_at,
        "nextAction": next_action_to_record(event.next_action),
        "capturedAmount": (
            None if event.captured_amount is None else event.captured_amount.to_decimal()
        ),
        "refusal": event.refusal,
    }


def payment_result_from_record(record: Mapping[str, Any]) -> PaymentResult:
    amount: Decimal = record["amount"]
    return PaymentResult(
        event_id=record["eventId"],
        payment_request_id=record["paymentRequestId"],
        order_id=record["orderId"],
        user_id=record["userId"],
        status=PaymentStatus(record["status"]),
        amount=money_from_decimal(amount, record["currency"]),
        provider=record.get("provider"),
        provider_reference=record.get("providerReference"),
        error=error_from_record(record.get("error")),
        created_at=record["createdAt"],
        occurred_at=record["occurredAt"],
        # Absent from v1 events: the reader's v2 default (null) fills it in.
        next_action=next_action_from_record(record.get("nextAction")),
        # Absent from v1 and v2 events: the reader's v3 default (null) fills it in.
        captured_amount=_captured_amount(record.get("capturedAmount"), record["currency"]),
        # Absent from v1 to v3 events: read as false here; PaymentMessages applies the rule
        # of those versions (domain.events.refusal_before_the_field) to their records.
        refusal=bool(record.get("refusal", False)),
    )


def _captured_amount(value: Decimal | None, currency: str) -> Money | None:
    return None if value is None else money_from_decimal(value, currency)


class PaymentMessages:
    """Bytes <-> domain objects for the payment topics. The only place both meet."""

    def __init__(self, codec: AvroCodec) -> None:
        self._codec = codec

    @classmethod
    def bundled(cls) -> PaymentMessages:
        """Messages with the schemas and ids shipped in this package."""
        return cls(AvroCodec(FileSchemaRegistry.bundled()))

    async def learn_writer(self, data: bytes) -> None:
        """Before decoding ``data``: let a registry-backed source fetch its writer schema."""
        await self._codec.learn_writer(data)

    def encode_command(self, command: CreatePayment) -> bytes:
        return self._codec.encode(CREATE_PAYMENT, create_payment_to_record(command))

    def decode_command(self, data: bytes) -> CreatePayment:
        return create_payment_from_record(self._codec.decode(data, CREATE_PAYMENT))

    def command_record(self, data: bytes) -> tuple[str, dict[str, Any]] | None:
        """The record name and the record ``data`` holds (in the newest shape), without
        applying the domain's rules; None if it is no decodable command. Every command kind
        is one (a CancelPayment too): the dead-letter redaction masks the digit runs of what
        is not, ids included, and a re-published cancel would then name another payment."""
        try:
            return self._codec.decode_one_of(
                data, (CREATE_PAYMENT, REFUND_PAYMENT, CAPTURE_PAYMENT, CANCEL_PAYMENT)
            )
        except CodecError:
            return None

    def encode_create_payment_record(self, record: Mapping[str, Any]) -> bytes:
        return self._codec.encode(CREATE_PAYMENT, record)

    def encode_refund(self, command: RefundPayment) -> bytes:
        return self._codec.encode(REFUND_PAYMENT, refund_payment_to_record(command))

    def encode_capture(self, command: CapturePayment) -> bytes:
        return self._codec.encode(CAPTURE_PAYMENT, capture_payment_to_record(command))

    def encode_cancel(self, command: CancelPayment) -> bytes:
        return self._codec.encode(CANCEL_PAYMENT, cancel_payment_to_record(command))

    def decode_any_command(self, data: bytes) -> Command:
        """A command of any kind: the writer's schema id says which."""
        name, record = self._codec.decode_one_of(
            data, (CREATE_PAYMENT, REFUND_PAYMENT, CAPTURE_PAYMENT, CANCEL_PAYMENT)
        )
        if name == REFUND_PAYMENT:
            return refund_payment_from_record(record)
        if name == CAPTURE_PAYMENT:
            return capture_payment_from_record(record)
        if name == CANCEL_PAYMENT:
            return cancel_payment_from_record(record)
        return create_payment_from_record(record)

    def encode_refund_result(self, event: RefundResult) -> bytes:
        return self._codec.encode(REFUND_RESULT, refund_result_to_record(event))

    def decode_any_result(self, data: bytes) -> ResultEvent:
        """A result event of either kind, as the results topic carries both."""
        name, record = self._codec.decode_one_of(data, (PAYMENT_RESULT, REFUND_RESULT))
        if name == REFUND_RESULT:
            return self._with_refusal(data, refund_result_from_record(record))
        return self._with_refusal(data, payment_result_from_record(record))

    def encode_result(self, event: PaymentResult) -> bytes:
        return self._codec.encode(PAYMENT_RESULT, payment_result_to_record(event))

    def decode_result(self, data: bytes) -> PaymentResult:
        event = payment_result_from_record(self._codec.decode(data, PAYMENT_RESULT))
        return self._with_refusal(data, event)

    def _with_refusal(self, data: bytes, event: _Event) -> _Event:
        """``event`` with ``refusal`` as its writer meant it: an event written before the
        field existed reads as its default, false, so the rule of its time decides."""
        if self._codec.writer_has_field(data, REFUSAL_FIELD):
            return event
        return dataclasses.replace(event, refusal=refusal_before_the_field(event))
