"""The provider port: what paygate needs from any payment provider.

An adapter translates these calls to its provider's API or SDK, passes the attempt key as
the provider's idempotency key, and maps every answer to a :class:`ChargeOutcome` or one of
the errors in :mod:`providers.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from domain.accounts import Account
from domain.errors import PaygateError
from domain.money import Money
from domain.payments import PaymentMethod
from domain.refunds import RefundReason


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """One attempt to charge. ``attempt_key`` is sent as the provider's idempotency key.

    ``capture=False`` only authorizes: the money is held, and :meth:`PaymentProvider.capture`
    takes it later.
    """

    attempt_key: str
    payment_request_id: str
    amount: Money
    payment_method: PaymentMethod
    payer: Account
    payee: Account
    metadata: Mapping[str, str] = field(default_factory=dict)
    capture: bool = True


class ChargeStatus(StrEnum):
    SUCCEEDED = "succeeded"
    # Authorized, not captured yet: only answered to a request with ``capture=False``.
    AUTHORIZED = "authorized"
    DECLINED = "declined"
    # An authorization released: voided (by paygate's cancel, or by someone at the
    # provider), or its hold ran out. Only answered for a charge made with ``capture=False``.
    CANCELED = "canceled"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class CaptureRequest:
    """Capture an authorized charge; ``amount`` may be less than what was authorized."""

    capture_key: str
    payment_request_id: str
    charge_reference: str
    amount: Money


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """Void an authorized charge: release the whole hold. ``cancel_key`` is sent as the
    provider's idempotency key."""

    cancel_key: str
    payment_request_id: str
    charge_reference: str


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """Return ``amount`` of the charge ``charge_reference`` (the charge's provider
    reference). ``refund_key`` is sent as the provider's idempotency key."""

    refund_key: str
    refund_id: str
    payment_request_id: str
    charge_reference: str
    amount: Money
    reason: RefundReason | None = None


class ProviderRefundStatus(StrEnum):
    SUCCEEDED = "succeeded"
    # Accepted; the provider settles it later. Ask again with refund_status.
    PENDING = "pending"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RefundOutcome:
    """The provider's answer to a refund. A failed refund carries a catalogue error."""

    status: ProviderRefundStatus
    provider_reference: str | None
    error: PaygateError | None = None


@dataclass(frozen=True, slots=True)
class ChargeOutcome:
    """A final answer from the provider. A decline carries a catalogue error."""

    status: ChargeStatus
    provider_reference: str | None
    error: PaygateError | None = None


class PaymentProvider(Protocol):
    """A payment provider. ``start``/``stop`` bracket its clients; ``stop`` is safe twice."""

    @property
    def name(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        """Charge once per attempt key; raises :class:`providers.errors.ProviderError`."""
        ...

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        """The outcome of an earlier charge, or None if the provider never received it."""
        ...

    async def charge_by_reference(self, provider_reference: str) -> ChargeOutcome | None:
        """The charge the provider knows as ``provider_reference``, or None if unknown."""
        ...

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        """Capture an authorized charge once per capture key."""
        ...

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        """Void an authorized charge once per cancel key: ``CANCELED``, or ``EXPIRED`` when
        its hold had run out already. A charge captured already is refused with a
        PaygateError (``payment_not_cancelable``): nothing changes."""
        ...

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        """Refund once per refund key; raises :class:`providers.errors.ProviderError`."""
        ...

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
        """The outcome of an earlier refund, or None if the provider never received it."""
        ...
