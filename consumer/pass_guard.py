"""One item of a periodic pass never ends the pass: the guard every reconciler and the
authorization-expiry job put around each item they settle or examine.

A pass walks a page of items (in-doubt payments, open refunds, captures and cancels left in
flight, authorized payments) in a stable order. If settling one raises anything but a
dependency outage -- a provider answer its adapter cannot read, a bug -- the item is logged
with its traceback and reported ``FAILED`` (its claim, if it held one, was given back as the
exception left the handler: consumer.claim_holding), and the pass goes on with the others.
Without the guard, that one item ended every pass where it stood: the items behind it in
the page, and anything the pass does at its end (the stray-charge sweep), never ran while it
stayed in doubt.

An outage (database, Kafka, a provider unreachable) still ends the pass: every item would
meet it alike, and the periodic runner logs it once (consumer.periodic).

The same module maps a handler's :class:`Outcome` to the ``result`` label of the
reconcilers' metrics, so the payment, refund and follow-up reconcilers count alike.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Final, TypeVar

from consumer.failures import outage_of
from consumer.outcome import Outcome

log = logging.getLogger("paygate.reconciler")

T = TypeVar("T")

# The ``result`` label of an item whose settling raised (not an outage).
FAILED: Final = "failed"
# The ``result`` label of an item whose claim another worker holds (or that finished).
OWNED_ELSEWHERE: Final = "owned_elsewhere"

_RESULTS: Final = MappingProxyType(
    {
        Outcome.PENDING: "still_pending",
        Outcome.REPLAYED: "already_final",
        Outcome.OWNED_ELSEWHERE: OWNED_ELSEWHERE,
    }
)


def result_of(outcome: Outcome) -> str:
    """The ``result`` label of a reconciled item whose handler answered ``outcome``: any
    outcome not listed above recorded a final answer (``resolved``)."""
    return _RESULTS.get(outcome, "resolved")


async def unless_poisoned(
    work: Awaitable[T],
    *,
    skipped: T,
    what: str,
    extra: Mapping[str, str],
    after_skip: Callable[[], Awaitable[None]] | None = None,
) -> T:
    """``await work``; if it raised anything but an outage, log ``what`` with the traceback
    and ``extra``, await ``after_skip()`` (when given) and return ``skipped``.

    ``after_skip`` is what moves the item out of the way of the next pass when nothing else
    does (a stamp of "examined"); an error there is the pass's, as any store error is."""
    try:
        return await work
    except Exception as exc:
        if outage_of(exc) is not None:
            raise  # every item would meet it: the pass ends, logged as the outage
        log.exception(what, extra=dict(extra))
        if after_skip is not None:
            await after_skip()
        return skipped
