"""The payment the REST benches ask for: a new order each time, charged at once.

The card is the sandbox's always-succeeding one, and the payee a valid IBAN, so every
request ends in a succeeded payment and a bench measures the path without refusals.
"""

from __future__ import annotations

from typing import Any, Final

SUCCESS_CARD: Final = "4242424242424242"
PAYEE_IBAN: Final = "DE89370400440532013000"


def payment_body(order_id: str) -> dict[str, Any]:
    """The JSON body of ``POST /v1/payments`` for ``order_id`` (25.00 EUR by card)."""
    return {
        "userId": "user-bench",
        "orderId": order_id,
        "amount": "25.00",
        "currency": "EUR",
        "paymentMethod": "card",
        "payerAccount": {"type": "card", "number": SUCCESS_CARD},
        "payeeAccount": {"type": "iban", "number": PAYEE_IBAN},
    }
