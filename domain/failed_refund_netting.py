"""Which failed refunds made outside paygate a provider's reading of a charge's refunded
total still counts, by the provider's own clock.

A provider's running total of what was refunded of a charge (Stripe's ``amount_refunded``
in a ``charge.refunded`` event) counts every refund standing when the provider made it: a
refund made outside paygate (in Stripe's Dashboard) that fails later is counted by the
readings made while it stood, and left out of every reading made before it was made or
after it failed (Stripe gives its money back to the merchant's balance and lowers the
total). paygate reads such a total net of what it counts of failed refunds, so a late
reading made while the refund stood does not count it again; netting it from a reading
that already leaves it out counts less than was refunded outside, and paygate then offers
the payer more than the charge keeps (the provider refuses the excess: no money moves
twice, but a refund the merchant expects to pass is refused).

The ordering key: the provider's time of each fact, never the time paygate hears of it.
Stripe's webhooks arrive late, out of order and retried for days, so arrival says nothing
of which reading came first; every event carries ``created``, the time Stripe made it
(whole seconds), with the object as it was then. A reading is the Charge in the event made
at ``reading_at``; a failed refund stood from its Refund's ``created`` (``made_at``) to the
``created`` of its ``refund.failed`` event (``failed_at``). The reading counts the refund
when it was made in that span, bounds included: a reading made in the same second as the
refund or its failure may or may not count it (whole seconds tie), and taking it as counted
errs toward counting less, the side the provider guards. So:

* a failure is never counted twice: every reading that can count it is netted of it, and
  what the failure itself took back is recorded once, by the provider's refund id;
* a failed refund is netted from no reading made a second or more after it failed (nor
  before it was made), so a later total counts exactly what Stripe holds refunded outside;
* a fact without a time (a failure recorded before its time was kept, a provider that
  sends none, a reading made by paygate's own query) is taken as standing at every
  reading: netted, as before times were kept (never more counted, maybe less); so is a
  failure whose times contradict each other (its refund made after its failure, by a
  skew between the provider's clocks).

Compared: reading the charge's list of refunds with their statuses from the provider when a
notice arrives would be exact where seconds tie, but it is a provider call on every notice
(rate limits, an outage of the call turns into unacknowledged notices), its answer can be
older than another worker's by the time it is written (so each refund would have to be
kept by id with a status that only moves forward), and it needs every provider's port to
list refunds. The provider's timestamps are in every event already; the one case they
cannot order, a second's tie, falls on the safe side and is corrected by the next reading.
This assumes the provider stamps an event when it makes the object's snapshot (Stripe's
``created``): an event stamped after a failure whose snapshot still counted the refund
would count it once more, as before failures were read at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FailedOutsideRefund:
    """A refund made outside paygate that its provider failed: its amount in minor units,
    and when the provider made it and failed it (Unix seconds; None: not known)."""

    amount_minor: int
    made_at: int | None = None
    failed_at: int | None = None


def counted_in_reading(failed: FailedOutsideRefund, reading_at: int | None) -> bool:
    """Whether a reading of the charge's refunded total the provider made at
    ``reading_at`` (Unix seconds; None: not known) may count ``failed``: made while it
    stood, a tie with either bound included."""
    if reading_at is None or failed.failed_at is None:
        return True
    if failed.made_at is not None and failed.made_at > failed.failed_at:
        # Made after it failed: the provider's clocks disagree (a skew between its
        # servers), so the span says nothing of which readings counted it. Taken as
        # read, no reading would be netted of it and one made while it stood would keep
        # it counted for good; netted from every reading, as a failure without times.
        return True
    made_by_then = failed.made_at is None or failed.made_at <= reading_at
    return made_by_then and reading_at <= failed.failed_at


def counted_failed_minor(failures: Iterable[FailedOutsideRefund], reading_at: int | None) -> int:
    """What the failed refunds a reading made at ``reading_at`` may count add up to: the
    part of it that is not refunded."""
    return sum(f.amount_minor for f in failures if counted_in_reading(f, reading_at))


def later_reading(
    stored: tuple[int, int] | None, reading: tuple[int, int]
) -> tuple[int, int] | None:
    """The reading (refunded total, made at) to keep as the charge's latest in place of
    ``stored``, or None to keep ``stored``: the one the provider made later; of two made
    in the same second, the greater total (both are netted alike, each is safe alone, and
    the greater one loses less of what was refunded outside)."""
    if stored is None:
        return reading
    stored_minor, stored_at = stored
    minor, at = reading
    if at > stored_at or (at == stored_at and minor > stored_minor):
        return reading
    return None
