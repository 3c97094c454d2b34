"""Exact money: decimal text in, integer minor units inside.

Amounts cross every boundary as decimal strings (REST) or Avro decimals (Kafka) and are
parsed with :class:`decimal.Decimal`, never through a float. Inside paygate they are
integer minor units (cents for USD, yen for JPY) paired with an ISO 4217 code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Final

from domain.currencies import minor_unit_exponent
from domain.errors import ErrorCode, PaygateError

# Plain positional notation only: an exponent ("1e2") or a sign hides intent and is
# exactly the kind of input a float-based client produces by accident.
_DECIMAL_TEXT: Final = re.compile(r"\A(0|[1-9][0-9]{0,17})(\.[0-9]{1,18})?\Z")

# The largest amount accepted, in minor units: fits a signed 64-bit integer with room
# for sums of refunds.
MAX_MINOR_UNITS: Final = 10**15


@dataclass(frozen=True, slots=True)
class Money:
    """A positive amount in integer minor units of ``currency``."""

    minor_units: int
    currency: str

    def __post_init__(self) -> None:
        if minor_unit_exponent(self.currency) is None:
            raise PaygateError(
                ErrorCode.UNSUPPORTED_CURRENCY,
                f"currency {self.currency!r} is not a supported ISO 4217 code",
                param="currency",
            )
        if not 0 < self.minor_units <= MAX_MINOR_UNITS:
            raise PaygateError(
                ErrorCode.INVALID_AMOUNT,
                f"amount must be greater than zero and at most {MAX_MINOR_UNITS} minor units",
                param="amount",
            )

    @property
    def exponent(self) -> int:
        exponent = minor_unit_exponent(self.currency)
        assert exponent is not None  # checked in __post_init__
        return exponent

    def to_decimal(self) -> Decimal:
        """The amount in major units, with exactly the currency's number of decimals."""
        return Decimal(self.minor_units).scaleb(-self.exponent)

    def __str__(self) -> str:
        return f"{self.to_decimal()} {self.currency}"


def check_currency(currency: object, *, param: str = "currency") -> str:
    if not isinstance(currency, str) or minor_unit_exponent(currency) is None:
        raise PaygateError(
            ErrorCode.UNSUPPORTED_CURRENCY,
            'currency must be an upper-case ISO 4217 code with minor units, such as "EUR"',
            param=param,
        )
    return currency


def money_from_text(amount: object, currency: object, *, param: str = "amount") -> Money:
    """Parse a decimal string such as ``"10.50"`` in ``currency``.

    Anything but a string is refused, JSON numbers included: by the time a JSON number
    reaches us it may already have been rounded through a binary float by the client.
    """
    code = check_currency(currency)
    if not isinstance(amount, str) or not _DECIMAL_TEXT.match(amount):
        raise PaygateError(
            ErrorCode.INVALID_AMOUNT,
            'amount must be a string of decimal digits such as "10.50" '
            "(no sign, exponent or JSON number)",
            param=param,
        )
    return money_from_decimal(Decimal(amount), code, param=param)


def money_from_decimal(amount: Decimal, currency: str, *, param: str = "amount") -> Money:
    """Convert an exact decimal (as Avro's decimal type delivers it) to minor units."""
    code = check_currency(currency)
    exponent = minor_unit_exponent(code)
    assert exponent is not None
    try:
        if not amount.is_finite():
            raise InvalidOperation
        scaled = amount.scaleb(exponent)
        minor = int(scaled)
    except (InvalidOperation, OverflowError, ValueError) as exc:
        raise PaygateError(
            ErrorCode.INVALID_AMOUNT, "amount is not a finite decimal number", param=param
        ) from exc
    if scaled != minor:
        raise PaygateError(
            ErrorCode.INVALID_AMOUNT,
            f"amount has more decimal places than {code} allows ({exponent})",
            param=param,
        )
    if minor <= 0:
        raise PaygateError(
            ErrorCode.INVALID_AMOUNT, "amount must be greater than zero", param=param
        )
    if minor > MAX_MINOR_UNITS:
        raise PaygateError(
            ErrorCode.INVALID_AMOUNT,
            f"amount must be at most {MAX_MINOR_UNITS} minor units",
            param=param,
        )
    return Money(minor, code)
