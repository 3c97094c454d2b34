"""Payment statuses and the transitions allowed between them.

::

    pending ──► processing ──► succeeded
       ▲            │    └───► failed
       └────────────┘  (provider outcome unknown: back to pending until reconciled)

``pending`` means "accepted, outcome not known yet": a command not yet processed, or a
provider call that timed out. It is never turned into ``failed`` by guessing; only an answer
from the provider makes a payment final.
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

    @property
    def is_final(self) -> bool:
        return self in (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED)


_P = PaymentStatus

ALLOWED_TRANSITIONS: Final = MappingProxyType(
    {
        _P.PENDING: frozenset({_P.PROCESSING, _P.SUCCEEDED, _P.FAILED}),
        _P.PROCESSING: frozenset({_P.PENDING, _P.SUCCEEDED, _P.FAILED}),
        _P.SUCCEEDED: frozenset[PaymentStatus](),
        _P.FAILED: frozenset[PaymentStatus](),
    }
)


class InvalidTransitionError(Exception):
    def __init__(self, current: PaymentStatus, target: PaymentStatus) -> None:
        super().__init__(f"a {current.value} payment cannot become {target.value}")
        self.current = current
        self.target = target
