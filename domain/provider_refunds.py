"""What paygate records of refunds the provider reports on a charge paygate did not refund.

Someone can refund a captured charge by hand in the provider's dashboard (Stripe's
``amount_refunded``, Alipay's closed paid trade), before paygate learns the charge was
captured at all: an authorization captured and refunded by hand, then found by a cancel, a
capture, their reconcilers or the authorization-expiry sweep. paygate then records the
refunded part in the payment's refunded total only:

* ``refunded_minor`` is what the provider reports refunded, so every later refund through
  paygate is bounded by what remains (the refund store's conditional updates read it);
* the status follows from it (:func:`status_with_refunds`): ``partially_refunded``, or
  ``refunded`` when nothing remains;
* no refund row and no refund event are made. A refund row is paygate's own call (its key,
  the provider's reference of it, its result event, its reconciler); one made up here would
  read as a refund paygate made, and a reconciler or a client could act on it. So the
  payment's refunded total may exceed the sum of its refund rows by what was refunded
  outside paygate, and the payment's result event (``partially_refunded`` or
  ``refunded``, with ``capturedAmount``) is the only news of it.

Where paygate records a charge it had not recorded captured, no refund of paygate's can be
behind the provider's figure, so all of it was made outside (:func:`refunded_at_provider`).

A payment paygate already recorded captured can be refunded outside paygate later, and the
provider says so (Alipay's notification of a trade it closed after a refund in full, with
``refund_fee``; Stripe's ``charge.refunded`` event, with the Charge's ``amount_refunded``).
Then the provider's figure counts paygate's own refunds too, some perhaps
still in flight in paygate's records (reserved), so :func:`absorbed_refunded_total` takes
from it only what cannot be paygate's: the total rises to the provider's figure less every
reservation and less the refunds the provider made and failed since, paygate's and those
made outside it that were standing when the provider made its reading
(domain.failed_refund_netting: a late notification may still count them; one made after
a failure already leaves it out), never falls (a notification
sent before a later refund is old news), and stays within what was captured less what is
reserved. It may count less than was refunded outside while paygate's own refunds are in
flight, once one of paygate's failed at the provider, or from a reading made in the same
second as a failure; never more.
"""

from __future__ import annotations

from domain.money import Money
from domain.status import PaymentStatus


def refunded_at_provider(
    captured_minor: int, currency: str, refunded: Money | None, *, in_full: bool = False
) -> int:
    """The refunded total, in minor units, to record for a charge the provider says it
    captured ``captured_minor`` of and has refunded ``refunded`` of (``in_full``: all of
    it, amount unsaid): 0 when it says nothing. Raises ValueError for an amount no refund
    of that capture can be (another currency, more than captured), which paygate must not
    record as the provider's word."""
    if in_full:
        return captured_minor
    if refunded is None:
        return 0
    if refunded.currency != currency or refunded.minor_units > captured_minor:
        raise ValueError(
            f"the provider says {refunded} refunded of {captured_minor} minor units captured"
        )
    return refunded.minor_units


def status_with_refunds(captured_minor: int, refunded_minor: int) -> PaymentStatus:
    """The status of a captured payment of which ``refunded_minor`` has been refunded."""
    if refunded_minor <= 0:
        return PaymentStatus.SUCCEEDED
    if refunded_minor >= captured_minor:
        return PaymentStatus.REFUNDED
    return PaymentStatus.PARTIALLY_REFUNDED


def absorbed_refunded_total(
    captured_minor: int,
    refunded_minor: int,
    reserved_minor: int,
    provider_refunded_minor: int,
    failed_at_provider_minor: int = 0,
) -> int | None:
    """The refunded total a captured payment (``refunded_minor`` refunded, ``reserved_minor``
    reserved by refunds in flight, ``failed_at_provider_minor`` of its refunds made at the
    provider and failed there since, paygate's and those made outside paygate) records when
    its provider says ``provider_refunded_minor`` was refunded of the charge in all; None
    when that changes nothing.

    A refund the provider made and then failed (Stripe's pending refund that fails) was
    counted in the provider's figure while it stood, and a notification made then still
    counts it when it is delivered late, after paygate recorded the failure and released
    its reservation: that amount is taken as paygate's, never as refunded outside (which
    would keep it from the payer). A refund made outside paygate that failed is taken back
    when its failure is recorded (persistence.outside_refund_failed), and a late
    notification that still counts it must not count it again: its amount is in
    ``failed_at_provider_minor`` too, when the provider made the reading while that refund
    stood (domain.failed_refund_netting), and not when it made it after the failure."""
    candidate = reading_total(
        captured_minor, reserved_minor, provider_refunded_minor, failed_at_provider_minor
    )
    return candidate if candidate > refunded_minor else None


def reading_total(
    captured_minor: int,
    reserved_minor: int,
    provider_refunded_minor: int,
    failed_at_provider_minor: int,
) -> int:
    """The refunded total a reading of the provider's figure stands for (what
    :func:`absorbed_refunded_total` raises to): the figure less every reservation and less
    the failed refunds the reading may count, within what was captured less what is
    reserved. Never more than was refunded, whenever the reading was made: a refund of
    paygate's in it is reserved, recorded succeeded or failed; a refund made outside it
    that failed since is netted (domain.failed_refund_netting)."""
    return min(
        provider_refunded_minor - reserved_minor - failed_at_provider_minor,
        captured_minor - reserved_minor,
    )
