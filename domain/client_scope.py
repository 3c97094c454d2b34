"""Client scope: which API client a payment, and each command that follows it, belongs to.

A payment made through the REST facade carries its API client's id; one made by an
upstream service on Kafka carries none (``None`` is a scope of its own, not a wildcard). A
refund or capture must name the scope of the payment it follows. One naming another scope
is refused exactly as a command naming no payment at all (``not_found``, same message, same
event): the refusal must not tell its sender that the payment exists in someone else's
scope. See docs/kafka.md, "Trust model of the Kafka intake".
"""

from __future__ import annotations

from domain.errors import ErrorCode, PaygateError


def in_scope(payment_client_id: str | None, command_client_id: str | None) -> bool:
    """Whether a command of ``command_client_id`` may act on a payment of
    ``payment_client_id``: only the same scope, ``None`` (upstream services) included."""
    return payment_client_id == command_client_id


def no_payment_in_scope() -> PaygateError:
    """The one refusal for a follow-up naming an unknown payment, a payment of another
    order, or a payment of another client scope."""
    return PaygateError(
        ErrorCode.NOT_FOUND,
        "no payment with this paymentRequestId in this order",
        param="paymentRequestId",
    )
