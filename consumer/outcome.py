"""What handling a command did: one vocabulary for payments, refunds, captures and cancels,
and the ``outcome`` label of ``paygate_commands_consumed_total``."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """What handling a command did; also the label of the commands-consumed metric."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PENDING = "pending"
    REPLAYED = "replayed"
    CONFLICT = "conflict"
    REFUSED = "refused"
    AUTHORIZED = "authorized"
    # Waiting for the payer (3-D Secure, a QR code to scan): the provider finishes it later.
    REQUIRES_ACTION = "requires_action"
    # An authorization released: voided by a cancel, or its hold had run out.
    CANCELED = "canceled"
    EXPIRED = "expired"
    # Charged, and already refunded in full at the provider, outside paygate.
    REFUNDED = "refunded"
    # Another worker holds the claim on the payment's provider work: this one did nothing.
    OWNED_ELSEWHERE = "owned_elsewhere"
