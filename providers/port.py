"""The provider port: what paygate needs from any payment provider.

An adapter translates these calls to its provider's API or SDK, passes the attempt key as
the provider's idempotency key, and maps every answer to a :class:`ChargeOutcome` or one of
the errors in :mod:`providers.errors`.

Payments that finish later (3-D Secure, Alipay): a charge may be answered
``requires_action`` with a :class:`domain.next_action.NextAction` for the payer. The
provider then tells the outcome later; paygate asks with :meth:`PaymentProvider.charge_status`
(which keeps answering ``requires_action`` while the payer has not acted) and, once the
action's time is over, ends the wait with :meth:`PaymentProvider.close_charge`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Protocol

from domain.accounts import Account
from domain.errors import PaygateError
from domain.money import Money
from domain.next_action import NextAction
from domain.payments import PaymentMethod
from domain.provider_refunds import refunded_at_provider
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
    # Waiting for the payer (carries a next action); not final.
    REQUIRES_ACTION = "requires_action"
    # An authorization released: voided (by paygate's cancel, or by someone at the
    # provider). Only answered for a charge made with ``capture=False``.
    CANCELED = "canceled"
    # Nothing taken, nothing held: the payer never acted and the provider closed the charge,
    # or an authorization's hold ran out.
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
    """The provider's answer. A decline carries a catalogue error. Only ``requires_action``
    carries a next action for the payer: always when answering a charge, not always when
    answering a status query (Alipay's does not repeat the QR code)."""

    status: ChargeStatus
    provider_reference: str | None
    error: PaygateError | None = None
    next_action: NextAction | None = None
    # What the provider says the charge has captured (a partial capture: less than the
    # authorization), when it says: set with ``succeeded`` only. None: not said.
    captured: Money | None = None
    # The payer paid, and the charge was then refunded in full at the provider, outside
    # paygate (Alipay closes such a trade): set with ``succeeded`` only. The charge
    # happened; nothing of it is kept.
    refunded_in_full: bool = False
    # What the provider says has been refunded of the charge in all (paygate's refunds and
    # any made outside paygate, by hand in the provider's dashboard), when it says: set with
    # ``succeeded`` only. None: not said. Read where paygate learns a charge it had not
    # recorded captured (domain.provider_refunds).
    refunded: Money | None = None

    def __post_init__(self) -> None:
        if self.next_action is not None and self.status is not ChargeStatus.REQUIRES_ACTION:
            raise ValueError("only a requires_action answer carries a next action")
        if self.captured is not None and self.status is not ChargeStatus.SUCCEEDED:
            raise ValueError("only a succeeded answer carries a captured amount")
        if self.refunded_in_full and self.status is not ChargeStatus.SUCCEEDED:
            raise ValueError("only a charge that succeeded can have been refunded")
        if self.refunded is not None and self.status is not ChargeStatus.SUCCEEDED:
            raise ValueError("only a succeeded answer carries a refunded amount")

    def kept(self, amount: Money) -> Money | None:
        """What the charge of ``amount`` keeps now: what it captured (the provider's word,
        else ``amount``) less what the provider says was refunded of it in all; None when
        nothing. Raises ValueError for a refunded figure no refund of that capture can be
        (another currency, more than captured): nobody can say what it keeps."""
        captured = self.captured if self.captured is not None else amount
        refunded = refunded_at_provider(
            captured.minor_units, captured.currency, self.refunded, in_full=self.refunded_in_full
        )
        left = captured.minor_units - refunded
        return Money(left, captured.currency) if left > 0 else None

    @property
    def nothing_kept(self) -> bool:
        """The provider says the charge was refunded in full: no money of it is taken."""
        if self.refunded_in_full:
            return True
        if self.refunded is None or self.captured is None:
            return False
        return (
            self.refunded.currency == self.captured.currency
            and self.refunded.minor_units >= self.captured.minor_units
        )


class PaymentProvider(Protocol):
    """A payment provider. ``start``/``stop`` bracket its clients; ``stop`` is safe twice."""

    @property
    def name(self) -> str: ...

    @property
    def idempotency_window(self) -> timedelta | None:
        """How long the provider honours an idempotency key (the attempt, refund, capture or
        cancel key): a call sent again under a key older than this may act a second time.
        None: for ever. paygate re-sends a key only well inside it (domain.resend_window)."""
        ...

    @property
    def status_search_lag(self) -> timedelta:
        """How long after a charge :meth:`charge_status` may still answer that its key holds
        none (a search index behind the charges; Stripe's). Zero: the answer reads the
        provider's own record of the key, so a charge made shows at once. paygate takes a
        "no charge" answer as final only for a key whose last possible charge is at least
        this old (domain.search_lag); until then the key is asked again."""
        ...

    @property
    def refund_status_lag(self) -> timedelta:
        """How long after a refund :meth:`refund_status` may still answer that its key holds
        none: :attr:`status_search_lag`'s counterpart for refunds. Zero: the answer reads the
        provider's own record of the refund (a list of the charge's refunds, a lookup by
        key). A refund withheld past the window may be failed by an operator only once the
        key's last possible arrival is at least this old (domain.operator_settlement)."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        """Charge once per attempt key; raises :class:`providers.errors.ProviderError`."""
        ...

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        """The outcome of an earlier charge, or None if the provider never received it."""
        ...

    async def charge_by_reference(self, provider_reference: str) -> ChargeOutcome | None:
        """The charge the provider knows as ``provider_reference``, or None if unknown. A
        captured charge answers ``SUCCEEDED`` with ``captured``, the amount the provider
        holds as captured, and ``refunded``, what it has refunded of it in all, wherever
        it can say them."""
        ...

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        """Capture an authorized charge once per capture key."""
        ...

    async def close_charge(self, attempt_key: str) -> ChargeOutcome | None:
        """End the wait of a ``requires_action`` charge whose action has expired.

        Answers ``expired`` once the provider will take no payment for it, or the outcome
        the payer reached just in time (``succeeded``, ...). None if the provider never
        received the charge. Safe to call again: a closed charge stays ``expired``.
        Providers without actions raise :class:`providers.errors.UnsupportedOperationError`.
        """
        ...

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        """Void an authorized charge once per cancel key: ``CANCELED``, or ``EXPIRED`` when
        its hold had run out already. A charge captured already (by paygate, or by hand at
        the provider) is refused with an error (PaygateError ``payment_not_cancelable``, or
        a ProviderError that is not retriable): nothing changes. The caller then reads the
        charge with :meth:`charge_by_reference`, which must report what the provider holds
        (``SUCCEEDED`` with ``captured``): the refusal alone never says the charge is still
        held."""
        ...

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        """Refund once per refund key; raises :class:`providers.errors.ProviderError`."""
        ...

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
        """The outcome of an earlier refund, or None if the provider never received it."""
        ...
