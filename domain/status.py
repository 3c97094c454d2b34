"""Payment statuses and the transitions allowed between them.

::

    pending ──► processing ──► succeeded ──► partially_refunded ──► refunded
       ▲            │    │ └──► failed   └────────────────────────────►┘
       └────────────┘    └──► authorized ──► capturing ──► succeeded
                                 │  ▲ │ ▲         │
                                 │  │ │ └─────────┘ (capture certainly not made)
                                 │  │ └──► canceling ──► canceled
                                 │  └──────────┘ (void certainly not made)
                                 └──► expired  (the provider's hold ended; canceling too)

     (settled at the provider without paygate: capturing ──► canceled | expired,
      canceling ──► succeeded; captured and refunded by hand since: authorized, capturing,
      canceling ──► partially_refunded | refunded)

     (provider outcome unknown: back to pending until reconciled)

    pending / processing ──► requires_action ──► succeeded | authorized | failed | expired
    pending / processing ──► expired  (a lost answer; the trade was closed unpaid)
    pending / processing / requires_action ──► refunded  (paid, then refunded in full at
                                                the provider before paygate heard of it)

``pending`` means "accepted, outcome not known yet": a command not yet processed, or a
provider call that timed out. It is never turned into ``failed`` by guessing; only an answer
from the provider makes a payment final. The refund statuses are reached only through
succeeded refunds (see domain.refunds); the charge behind them stays succeeded. One
exception: a charge the provider reports paid and already refunded in full outside paygate
(Alipay closes such a trade, ``TRADE_CLOSED`` with a payment date) is recorded ``refunded``
at once, its refunded amount the whole amount, with no refund of paygate's behind it.
Likewise an authorization the provider reports captured and then refunded by hand, in part
or in full, before paygate learnt of the capture: ``partially_refunded`` or ``refunded``,
its refunded total the provider's, with no refund row (domain.provider_refunds).

``requires_action`` means "the provider is waiting for the payer" (scan a QR code, pass a
3-D Secure challenge): the payment carries a next action and holds no claim, since no worker
has anything to do until the provider says how it ended (its signed notification, or the
reconciler's query).

``capturing`` and ``canceling`` are the write-ahead moves of a capture and of a void: an
``authorized`` payment takes at most one of them at a time, by one conditional update, so a
capture and a cancel that cross cannot both reach the provider. ``canceled`` means the
provider voided the authorization.

The provider may settle an authorization without paygate (captured or voided by hand in
its dashboard). Then a void can end ``succeeded`` (the provider says the charge is
captured, of the amount it reports) and a capture ``canceled`` or ``expired`` (the provider
says the hold is released): paygate records what the provider holds, with the command's
refusal (``payment_already_captured``, ``payment_already_canceled``), never the payment
back to ``authorized``. An ``authorized`` payment nobody follows up is found so by the
authorization-expiry sweep: ``succeeded`` (captured by hand) or ``canceled`` (voided).

``expired`` is final and has two causes: the payer never acted on a ``requires_action``
payment (the provider closed the trade unpaid), or an ``authorized`` payment's hold ran out
(the provider released it). Either way, like ``canceled``, it holds no money: nothing was
charged and nothing is held, so no capture, refund or void can follow.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType
from typing import Final


class PaymentStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    AUTHORIZED = "authorized"
    CAPTURING = "capturing"
    REQUIRES_ACTION = "requires_action"
    CANCELING = "canceling"
    CANCELED = "canceled"
    EXPIRED = "expired"

    @property
    def charge_known(self) -> bool:
        """The provider has answered the charge (a capture or refunds may follow)."""
        return self not in WAITING_FOR_PROVIDER

    @property
    def is_final(self) -> bool:
        """Nothing is in flight: the charge is answered and no capture is under way."""
        return self.charge_known and self not in IN_FLIGHT

    @property
    def charge_outcome(self) -> PaymentStatus:
        """What the charge itself came to: a refunded payment's charge succeeded, a payment
        being captured is (still) authorized."""
        if self in CAPTURED:
            return PaymentStatus.SUCCEEDED
        if self in IN_FLIGHT:
            return PaymentStatus.AUTHORIZED
        return self

    @property
    def ends_a_wait(self) -> bool:
        """A client waiting for this payment (``Prefer: wait``) has its answer: the payment
        is final, or it needs the payer to act, which only the client can bring about."""
        return self.is_final or self is PaymentStatus.REQUIRES_ACTION


_P = PaymentStatus

# Statuses of a payment whose money was taken: the ones a refund may start from (with
# something left to refund) and that make an order paid.
CAPTURED: Final = frozenset({_P.SUCCEEDED, _P.PARTIALLY_REFUNDED, _P.REFUNDED})
# Statuses of a payment whose money is held, not taken: only a capture or a void may follow.
HELD: Final = frozenset({_P.AUTHORIZED, _P.CAPTURING, _P.CANCELING})
# A capture or a void is under way: the provider may be acting on the authorization.
IN_FLIGHT: Final = frozenset({_P.CAPTURING, _P.CANCELING})
# The authorization was released: nothing is held or taken, and nothing can follow.
RELEASED: Final = frozenset({_P.CANCELED, _P.EXPIRED})
# Statuses whose charge the provider has not answered yet: the attempt stays open, and the
# reconciler may ask about it. ``requires_action`` waits on the payer, the others on us.
WAITING_FOR_PROVIDER: Final = frozenset({_P.PENDING, _P.PROCESSING, _P.REQUIRES_ACTION})

ALLOWED_TRANSITIONS: Final = MappingProxyType(
    {
        # Expired too: a call whose answer was lost may have opened a trade that waited for
        # a payer who never acted, which the provider then closed.
        # Refunded too: paid, then refunded in full outside paygate before its answer came.
        _P.PENDING: frozenset(
            {
                _P.PROCESSING,
                _P.SUCCEEDED,
                _P.FAILED,
                _P.AUTHORIZED,
                _P.REQUIRES_ACTION,
                _P.EXPIRED,
                _P.REFUNDED,
            }
        ),
        _P.PROCESSING: frozenset(
            {
                _P.PENDING,
                _P.SUCCEEDED,
                _P.FAILED,
                _P.AUTHORIZED,
                _P.REQUIRES_ACTION,
                _P.EXPIRED,
                _P.REFUNDED,
            }
        ),
        # Only the provider's word moves it on: the payer paid (or was authorized), was
        # refused, never acted in time, or paid and was refunded in full outside paygate.
        _P.REQUIRES_ACTION: frozenset(
            {_P.SUCCEEDED, _P.AUTHORIZED, _P.FAILED, _P.EXPIRED, _P.REFUNDED}
        ),
        # Canceled or succeeded too: voided, or captured, at the provider without paygate
        # (the authorization-expiry sweep finds it).
        # Refunded (in part or in full) too: captured and then refunded by hand at the
        # provider before paygate learnt of it (domain.provider_refunds).
        _P.AUTHORIZED: frozenset(
            {
                _P.CAPTURING,
                _P.CANCELING,
                _P.EXPIRED,
                _P.CANCELED,
                _P.SUCCEEDED,
                _P.PARTIALLY_REFUNDED,
                _P.REFUNDED,
            }
        ),
        # The other way too: the provider says the authorization was settled without
        # paygate (voided, or captured, by hand, and perhaps refunded since) before the
        # follow-up reached it.
        _P.CAPTURING: frozenset(
            {
                _P.SUCCEEDED,
                _P.AUTHORIZED,
                _P.CANCELED,
                _P.EXPIRED,
                _P.PARTIALLY_REFUNDED,
                _P.REFUNDED,
            }
        ),
        _P.CANCELING: frozenset(
            {
                _P.CANCELED,
                _P.EXPIRED,
                _P.AUTHORIZED,
                _P.SUCCEEDED,
                _P.PARTIALLY_REFUNDED,
                _P.REFUNDED,
            }
        ),
        _P.CANCELED: frozenset[PaymentStatus](),
        _P.EXPIRED: frozenset[PaymentStatus](),
        _P.SUCCEEDED: frozenset({_P.PARTIALLY_REFUNDED, _P.REFUNDED}),
        _P.FAILED: frozenset[PaymentStatus](),
        _P.PARTIALLY_REFUNDED: frozenset({_P.PARTIALLY_REFUNDED, _P.REFUNDED}),
        _P.REFUNDED: frozenset[PaymentStatus](),
    }
)


class InvalidTransitionError(Exception):
    def __init__(self, current: PaymentStatus, target: PaymentStatus) -> None:
        super().__init__(f"a {current.value} payment cannot become {target.value}")
        self.current = current
        self.target = target
