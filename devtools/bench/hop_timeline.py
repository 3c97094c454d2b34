"""One create-and-wait's timeline, and the hops between its marks.

Every mark is a wall-clock instant (seconds since the epoch) that the system already
records, read after the run; nothing in paygate is instrumented for it:

    sent         the client calls ``POST /v1/payments`` (the bench's clock)
    command_at   the command record's Kafka CreateTime (milliseconds): the facade handed
                 the record to its producer, after parsing, the order read and vaulting
    created_at   the payment row's ``created_at``: the consumer's clock as it handed the
                 payment's begin to the writer queue (committed just after)
    updated_at   the payment row's ``updated_at``: the consumer's clock as it handed the
                 provider's outcome to the writer queue
    result_at    the CreateTime of the first result record of the order that ends the
                 client's wait: the outbox relay handed it to its producer
    answered     the client has read the whole answer (the bench's clock)

Invariant: the hops telescope, so a request's hops add up to its total exactly (up to
float rounding); a hop is never clamped. All clocks are the one machine's, so a hop is
off by at most the granularity of its coarser mark: a Kafka timestamp is truncated to the
millisecond, so a hop that ends on one may read up to 1 ms short, and one that starts on
one up to 1 ms long (:data:`CLOCK_GRANULARITY_S`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Final

CLOCK_GRANULARITY_S: Final = 0.001

# Each hop's name, and what happens in it (what the report prints).
HOPS: Final = (
    ("facade in", "client send -> command record: HTTP, parse, order read, vaulting"),
    ("intake", "-> created_at: producer linger, broker, consumer fetch, decode, intake"),
    ("provider", "-> updated_at: begin committed, provider call"),
    ("relay", "-> result record: outcome committed, outbox relay"),
    ("facade out", "-> client answer: broker, result listener, store read, JSON, HTTP"),
)
TOTAL: Final = "total"


@dataclass(frozen=True, slots=True)
class Timeline:
    """One request's marks, in the order above, as epoch seconds."""

    sent: float
    command_at: float
    created_at: float
    updated_at: float
    result_at: float
    answered: float

    def hops_s(self) -> tuple[float, ...]:
        """The hops in seconds, in the order of :data:`HOPS`; they sum to :meth:`total_s`."""
        marks = (
            self.sent,
            self.command_at,
            self.created_at,
            self.updated_at,
            self.result_at,
            self.answered,
        )
        return tuple(later - earlier for earlier, later in pairwise(marks))

    def total_s(self) -> float:
        return self.answered - self.sent


def hop_samples(timelines: Iterable[Timeline]) -> dict[str, list[float]]:
    """Every hop's samples in milliseconds, and the total's, by name (report order)."""
    samples: dict[str, list[float]] = {name: [] for name, _ in HOPS}
    samples[TOTAL] = []
    for timeline in timelines:
        for (name, _), hop_s in zip(HOPS, timeline.hops_s(), strict=True):
            samples[name].append(hop_s * 1000)
        samples[TOTAL].append(timeline.total_s() * 1000)
    return samples


def timelines(
    requests: Iterable[tuple[str, float, float]],
    commands: Mapping[str, float],
    rows: Mapping[str, tuple[float, float]],
    results: Mapping[str, float],
) -> tuple[dict[str, Timeline], list[str]]:
    """The timelines of ``requests`` (order id, sent, answered) by order id, each mark
    looked up by the order id; and the order ids of those with a mark missing (both in
    request order)."""
    found: dict[str, Timeline] = {}
    missing: list[str] = []
    for order_id, sent, answered in requests:
        command_at, row, result_at = (
            commands.get(order_id),
            rows.get(order_id),
            results.get(order_id),
        )
        if command_at is None or row is None or result_at is None:
            missing.append(order_id)
            continue
        found[order_id] = Timeline(sent, command_at, row[0], row[1], result_at, answered)
    return found, missing
