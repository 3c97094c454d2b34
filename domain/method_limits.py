"""Amounts a payment method's provider refuses for one payment, refused at intake instead.

Alipay takes one trade of at most 100,000,000.00 yuan: ``total_amount`` of
``alipay.trade.precreate`` and ``alipay.trade.page.pay`` is documented with the range
``[0.01, 100000000]`` (Alipay open platform, "alipay.trade.precreate", request parameters;
its SDK's model docs say the same), and a trade above it is answered
``ACQ.TOTAL_FEE_EXCEED`` (no trade opened). paygate's own ceiling
(:data:`domain.money.MAX_MINOR_UNITS`) is far above it, so such a payment used to be
admitted, written and sent, only for Alipay to refuse it. Refused at intake, the client
learns at once why, with a stable code and message, and nothing is written: a REST
``400 invalid_amount``, a Kafka command dead-lettered with the same error.

The rule is the payment method's, not the route's: ``paymentMethod: "alipay"`` is paid
through Alipay whatever provider name routes it. Another currency than CNY is not this
rule's: Alipay's adapter refuses it (``unsupported_currency``) before any call.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from domain.errors import ErrorCode, PaygateError
from domain.money import Money

# The largest amount one payment of a method may be, per currency, in minor units.
MAX_AMOUNTS: Final[Mapping[str, Mapping[str, int]]] = MappingProxyType(
    {"alipay": MappingProxyType({"CNY": 100_000_000_00})}
)


def check_amount_for_method(method: str, amount: Money, *, param: str = "amount") -> None:
    """Raise ``invalid_amount`` (naming ``param``) when ``amount`` is above what one payment
    of ``method`` may be in its currency; nothing for a method or currency without a
    limit."""
    limit = MAX_AMOUNTS.get(method, {}).get(amount.currency)
    if limit is None or amount.minor_units <= limit:
        return
    most = Money(limit, amount.currency)
    raise PaygateError(
        ErrorCode.INVALID_AMOUNT,
        f"amount must be at most {most.to_decimal()} {amount.currency} for paymentMethod "
        f"{method} (the provider's limit for one payment)",
        param=param,
    )
