"""Commands: what clients ask paygate to do, validated and independent of how they arrived.

A REST body and an Avro message both end up as a :class:`CreatePayment` through
:meth:`CreatePayment.create`, so both intakes apply exactly the same rules.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Final

from domain.account_numbers import check_no_account_number
from domain.errors import ErrorCode, PaygateError
from domain.method_limits import check_amount_for_method
from domain.money import Money
from domain.text import check_characters, check_text
from domain.vaulted import AnyAccount

_IDENTIFIER: Final = re.compile(r"\A[A-Za-z0-9._:\-]{1,64}\Z")
_IDEMPOTENCY_KEY: Final = re.compile(r"\A[\x21-\x7e]{1,255}\Z")
_PAYMENT_ID: Final = re.compile(r"\Apay_[0-9a-f]{32}\Z")
MAX_ORDER_ID_LENGTH: Final = 64
MAX_METADATA_KEYS: Final = 20
MAX_METADATA_KEY_LENGTH: Final = 40
MAX_METADATA_VALUE_LENGTH: Final = 500

# Fixed forever: payment ids are derived from it, so changing it would split one payment
# into two across a deploy.
_PAYMENT_ID_NAMESPACE: Final = uuid.UUID("6f1b8f3e-3c55-4b8e-9a51-5d1f0a7f4c21")


class PaymentMethod(StrEnum):
    CARD = "card"
    BANK_TRANSFER = "bank_transfer"
    WALLET = "wallet"
    # Alipay (QR code or web redirect): the payer acts, the payment finishes later.
    ALIPAY = "alipay"


# A pure function, so remembering recent answers cannot change one: each command's id is
# derived when it is decoded and again when the intake swaps its accounts for vault tokens
# (a copy of a frozen command constructs it anew), a uuid5 each (docs/performance.md).
@functools.lru_cache(maxsize=4096)
def payment_request_id_for(
    order_id: str, idempotency_key: str, generation: int = 0, client_id: str | None = None
) -> str:
    """The one payment id a (scope, idempotency key) pair maps to, on every intake.

    Deterministic, so a redelivered or re-sent command lands on the same row. The scope is
    the client's order: the API client that sent it (None for commands that upstream
    services put on Kafka themselves) and its order id, so two clients' keys and order ids
    never meet. Keys expire (see domain.idempotency): a key used again after its payment's
    key expired starts a new generation, and so a new payment.
    """
    name = f"{order_id}\x1f{idempotency_key}"
    if generation:
        name += f"\x1f{generation}"
    if client_id is not None:
        name = f"client:{client_id}\x1f{name}"
    return "pay_" + uuid.uuid5(_PAYMENT_ID_NAMESPACE, name).hex


def is_payment_request_id(value: str) -> bool:
    return bool(_PAYMENT_ID.match(value))


def check_follow_up(
    payment_request_id: object, order_id: object, requested_at: datetime
) -> tuple[str, str]:
    """The (payment id, order id) a command that follows a payment (a refund, a capture)
    names, checked; its order id is also its Kafka key, so it queues behind the payment.

    An id not even shaped like a payment id is ``not_found``, as the REST paths answer it.
    """
    check_characters(payment_request_id, "paymentRequestId")
    if not isinstance(payment_request_id, str) or not is_payment_request_id(payment_request_id):
        raise PaygateError(
            ErrorCode.NOT_FOUND,
            "no payment with this paymentRequestId",
            param="paymentRequestId",
        )
    # Only the text rule, not the identifier pattern: the payment's own order id was checked
    # when it was created, and one that is not it simply names no payment of the order.
    order = check_text(order_id, param="orderId", max_length=MAX_ORDER_ID_LENGTH)
    if requested_at.tzinfo is None:
        raise ValueError("requested_at must be timezone-aware")
    return payment_request_id, order


def _identifier(value: object, param: str) -> str:
    check_characters(value, param)
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise PaygateError(
            ErrorCode.INVALID_REQUEST,
            f"{param} must be 1 to 64 letters, digits or . _ : -",
            param=param,
        )
    return value


def check_client_id(value: object) -> str | None:
    """A command's client scope: None (an upstream service's) or an API client's id."""
    return None if value is None else _identifier(value, "clientId")


def check_idempotency_key(value: object, param: str = "idempotencyKey") -> str:
    check_characters(value, param)
    if not isinstance(value, str) or not _IDEMPOTENCY_KEY.match(value):
        raise PaygateError(
            ErrorCode.INVALID_REQUEST,
            "idempotency key must be 1 to 255 printable ASCII characters without spaces",
            param=param,
        )
    return value


def _metadata(value: Mapping[str, str]) -> dict[str, str]:
    if len(value) > MAX_METADATA_KEYS:
        raise PaygateError(
            ErrorCode.INVALID_REQUEST,
            f"metadata may have at most {MAX_METADATA_KEYS} keys",
            param="metadata",
        )
    for key, item in value.items():
        # The key is checked first: only a checked key may appear in the value's param, and
        # one that holds an account number never appears in any param (a dead letter's
        # reason and headers carry the param in clear).
        check_text(key, param="metadata", name="metadata keys", max_length=MAX_METADATA_KEY_LENGTH)
        check_no_account_number(key, param="metadata", name="a metadata key")
        check_text(
            item,
            param=f"metadata.{key}",
            name="metadata values",
            min_length=0,
            max_length=MAX_METADATA_VALUE_LENGTH,
        )
        check_no_account_number(item, param=f"metadata.{key}", name=f"metadata.{key}")
    return dict(value)


@dataclass(frozen=True, slots=True)
class CreatePayment:
    """Charge ``amount`` from ``payer`` to ``payee`` for ``order_id``."""

    idempotency_key: str
    user_id: str
    order_id: str
    amount: Money
    payment_method: PaymentMethod
    # Clear or in an intake form only between an intake and the vault (domain.vaulted).
    payer: AnyAccount
    payee: AnyAccount
    requested_at: datetime
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Says the client knows an earlier payment of this order failed and wants to try again.
    new_attempt: bool = False
    # How many earlier payments used this key and saw it expire; set by the store, which
    # alone knows (see domain.idempotency). Not a client parameter.
    generation: int = 0
    # The API client that sent the command through the facade; None from upstream services.
    client_id: str | None = None
    # False: authorize only; the money is taken later by a CapturePayment command.
    capture: bool = True
    # Derived once, at construction: the id is read several times per payment (store,
    # seal, events, logs) and a uuid5 each time was a measurable share of the consumer's
    # CPU (docs/performance.md). dataclasses.replace() constructs anew, so a changed
    # generation gets its own id.
    _payment_id: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        payment_id = payment_request_id_for(
            self.order_id, self.idempotency_key, self.generation, self.client_id
        )
        object.__setattr__(self, "_payment_id", payment_id)

    @classmethod
    def create(
        cls,
        *,
        idempotency_key: object,
        user_id: object,
        order_id: object,
        amount: Money,
        payment_method: object,
        payer: AnyAccount,
        payee: AnyAccount,
        requested_at: datetime,
        metadata: Mapping[str, str],
        new_attempt: bool = False,
        client_id: str | None = None,
        capture: bool = True,
    ) -> CreatePayment:
        check_characters(payment_method, "paymentMethod")
        try:
            method = PaymentMethod(str(payment_method))
        except ValueError:
            raise PaygateError(
                ErrorCode.INVALID_REQUEST,
                f"paymentMethod must be one of: {', '.join(m.value for m in PaymentMethod)}",
                param="paymentMethod",
            ) from None
        if requested_at.tzinfo is None:
            raise ValueError("requested_at must be timezone-aware")
        check_amount_for_method(method.value, amount)
        return cls(
            idempotency_key=check_idempotency_key(idempotency_key),
            user_id=_identifier(user_id, "userId"),
            order_id=_identifier(order_id, "orderId"),
            amount=amount,
            payment_method=method,
            payer=payer,
            payee=payee,
            requested_at=requested_at,
            metadata=_metadata(metadata),
            new_attempt=new_attempt,
            client_id=check_client_id(client_id),
            capture=capture,
        )

    @property
    def payment_request_id(self) -> str:
        return self._payment_id

    def of_generation(self, generation: int) -> CreatePayment:
        """This command under key ``generation``: itself when it already is (nearly always;
        a copy derives its payment id again, a uuid5 for nothing), else a copy with the
        generation's own payment id."""
        if self.generation == generation:
            return self
        return replace(self, generation=generation)

    def parameters_fingerprint(self, account_key: bytes) -> str:
        """A hash of what the client asked for, to tell a replay from a conflicting reuse.

        Account numbers enter only through their keyed fingerprints, so the hash can be
        stored. ``requested_at`` is left out: a re-sent request is the same request.
        """
        canonical = {
            "userId": self.user_id,
            "orderId": self.order_id,
            "amount": self.amount.minor_units,
            "currency": self.amount.currency,
            "paymentMethod": self.payment_method.value,
            "payer": [self.payer.type.value, self.payer.ref(account_key).fingerprint],
            "payee": [self.payee.type.value, self.payee.ref(account_key).fingerprint],
            "metadata": dict(sorted(self.metadata.items())),
            "newAttempt": self.new_attempt,
        }
        if not self.capture:
            # Only when set, so fingerprints stored before the flag existed stay valid.
            canonical["capture"] = False
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()
