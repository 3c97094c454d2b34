"""Result events: what paygate tells the world after a payment changes state."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from domain.error_info import ErrorInfo
from domain.errors import ErrorCode
from domain.money import Money
from domain.next_action import NextAction
from domain.refunds import RefundStatus
from domain.status import CAPTURED, PaymentStatus

_EVENT_ID_NAMESPACE: Final = uuid.UUID("0c7c4a3e-8f0e-4d0b-b2a4-2f5e4f8e9a17")


def result_event_id(payment_request_id: str, status: PaymentStatus) -> str:
    """Stable per (payment, status): a re-published event keeps its id, so readers can dedupe."""
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"{payment_request_id}:{status.value}"))


def capture_event_id(payment_request_id: str, what: str, occurred_at: datetime) -> str:
    """For events of a capture that did not take the money (refused, or undone): each such
    occurrence is news of its own, which the per-status id would merge with the payment's
    first ``authorized`` event."""
    name = f"{payment_request_id}:capture:{what}:{occurred_at.isoformat()}"
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, name))


def cancel_event_id(payment_request_id: str, what: str, occurred_at: datetime) -> str:
    """For events of a cancel that released nothing (refused, or undone), as
    :func:`capture_event_id` is for captures."""
    name = f"{payment_request_id}:cancel:{what}:{occurred_at.isoformat()}"
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, name))


def outside_refund_event_id(
    payment_request_id: str, refunded_minor: int, failed_at_provider_minor: int = 0
) -> str:
    """For the event of a captured payment whose refunded total rose to ``refunded_minor``
    by refunds made outside paygate (domain.provider_refunds): each total is news of its
    own, which the per-status id would merge with an earlier ``partially_refunded`` event.

    The total can fall (a refund of paygate's, or one made outside it, failed at the
    provider) and rise to the same figure again: that rise is news too, and named by the
    total alone it would carry the first rise's id and be dropped as its duplicate (by a
    reader of the results topic, and by the webhook fan-out, which skips an event id it
    queued). ``failed_at_provider_minor``, what the payment's refunds failed at the provider
    add up to when it rose, grows with every such fall and never shrinks, so the pair never
    recurs; 0 (no fall yet) keeps the name of the ids made before it was part of it."""
    name = f"{payment_request_id}:refunded-outside:{refunded_minor}"
    if failed_at_provider_minor:
        name += f":after-failed:{failed_at_provider_minor}"
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, name))


def outside_refund_failed_event_id(payment_request_id: str, provider_refund: str) -> str:
    """For the event of a captured payment whose refunded total fell because the provider
    failed a refund made outside paygate (``provider_refund``, its id at the provider): one
    per failed refund, never the id of an earlier rise to the same total."""
    name = f"{payment_request_id}:outside-refund-failed:{provider_refund}"
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, name))


def conflict_event_id(payment_request_id: str, parameters_fingerprint: str) -> str:
    """Stable per refused reuse of a key: the same conflicting command re-sent keeps its id."""
    name = f"{payment_request_id}:conflict:{parameters_fingerprint}"
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, name))


@dataclass(frozen=True, slots=True)
class PaymentResult:
    event_id: str
    payment_request_id: str
    order_id: str
    user_id: str
    status: PaymentStatus
    amount: Money
    provider: str | None
    provider_reference: str | None
    error: ErrorInfo | None
    created_at: datetime
    occurred_at: datetime
    # What the payer must do: set with status requires_action only.
    next_action: NextAction | None = None
    # What the capture took (or is taking while capturing), partial or full; set with
    # capturing and the captured statuses only (see captured_in_event).
    captured_amount: Money | None = None
    # True only on the answer to a CreatePayment refused for reusing its key with other
    # parameters: status, amount and user are that command's, the payment is unchanged.
    # Readers that follow the payment's state skip it (webhooks, REST waits).
    refusal: bool = False

    @property
    def payment_result(self) -> bool:
        """The seed's boolean: true only for a payment that certainly succeeded."""
        return self.status.charge_outcome is PaymentStatus.SUCCEEDED


def refund_event_id(refund_id: str, status: RefundStatus) -> str:
    """Stable per (refund, status), like :func:`result_event_id`."""
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"{refund_id}:{status.value}"))


@dataclass(frozen=True, slots=True)
class RefundResult:
    """A refund changed state. Also says where its payment stands after it."""

    event_id: str
    refund_id: str
    payment_request_id: str
    order_id: str
    status: RefundStatus
    # Amounts in minor units of ``currency``. All three are None for a refund of a payment
    # that does not exist (nothing is known), and ``amount_minor`` is None for a refused
    # "refund what remains" request when nothing remained.
    currency: str | None
    amount_minor: int | None
    reason: str | None
    # The payment's status and refunded total after this change (None: no such payment).
    payment_status: PaymentStatus | None
    payment_refunded_minor: int | None
    provider: str | None
    provider_reference: str | None
    error: ErrorInfo | None
    created_at: datetime
    occurred_at: datetime
    # True only on the answer to a RefundPayment refused for reusing its key with other
    # parameters: status, amount and reason are that command's, the refund is unchanged.
    refusal: bool = False


def refusal_before_the_field(event: PaymentResult | RefundResult) -> bool:
    """Whether an event written before the ``refusal`` field existed (PaymentResult before
    v4, RefundResult before v2) answers a refused command, so that events of both ages
    read alike.

    Exact for every event paygate has published: such an answer is ``failed`` with error
    ``idempotency_conflict`` under an event id of its own (:func:`conflict_event_id`),
    while a payment or refund that itself failed with that code (a provider refusing a
    reused key) carries its per-status id, and refused captures carry the payment's status.
    """
    if event.error is None or event.error.code is not ErrorCode.IDEMPOTENCY_CONFLICT:
        return False
    if isinstance(event, PaymentResult):
        own = result_event_id(event.payment_request_id, PaymentStatus.FAILED)
        return event.status is PaymentStatus.FAILED and event.event_id != own
    own = refund_event_id(event.refund_id, RefundStatus.FAILED)
    return event.status is RefundStatus.FAILED and event.event_id != own


def captured_in_event(
    status: PaymentStatus, amount: Money, captured_minor: int | None
) -> Money | None:
    """The ``captured_amount`` an event of a payment in ``status`` carries: what its capture
    took (``captured_minor``; None means all of ``amount``, as for a payment captured at
    once) when the payment is capturing or captured; None in any other status, where
    nothing is taken. The same rule as REST's ``capturedAmount``."""
    if status is not PaymentStatus.CAPTURING and status not in CAPTURED:
        return None
    return amount if captured_minor is None else Money(captured_minor, amount.currency)
