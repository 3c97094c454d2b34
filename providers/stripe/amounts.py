"""Stripe's amount rules: paygate's ISO 4217 minor units to Stripe's integer ``amount`` and
back, exactly (integer arithmetic only). Pure: no I/O.

Stripe does not count every currency in ISO 4217 minor units. Its rules, from Stripe's
documentation page "Supported currencies" (sections "Specify amounts in API requests",
"Zero-decimal currencies" and "Special cases"), and how paygate applies them::

    currency                      Stripe's amount        must be a     e.g. paygate -> Stripe
                                  (major units x)        multiple of
    two-decimal (the default)     100                    1             10.50 EUR -> 1050
    zero-decimal list             1                      1             500 JPY   -> 500
                                                                        10.00 MGA -> 10
    ISK, UGX (special cases)      100                    100           5 ISK     -> 500
    HUF, TWD (special cases)      100                    1             10.45 HUF -> 1045
    BHD JOD KWD OMR TND           1000                   10            5.120 KWD -> 5120

- "Currencies are two-decimal currencies unless otherwise specified." That includes ISO
  currencies Stripe names no rule for, whatever their ISO exponent (IQD 3, CLF 4, UYI 0);
  whether Stripe takes them at all is Stripe's to answer, with nothing charged if not.
- Zero-decimal list: BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF, where
  "the charge and the amount are the same, without requiring multiplication". MGA is the one
  whose ISO 4217 exponent (2) differs: Stripe has no fractions of an ariary, so an MGA amount
  with a fraction cannot be sent exactly.
- ISK and UGX: each "transitioned to a zero-decimal currency, but backward compatibility
  requires you to represent it as a two-decimal value, where the decimal amount is always
  00 ... You can't charge fractions". UGX is also on the zero-decimal list; this more
  specific rule is the one followed (to charge 5 UGX, send 500). Stripe's support article
  "Deprecation of fractional ISK charges and refunds" says the API refuses ISK amounts that
  are not multiples of 100, for charges, PaymentIntents and refunds alike. ISO 4217 gives
  both exponent 0, so every paygate amount in them converts exactly.
- HUF and TWD: "Stripe treats HUF [TWD] as a zero-decimal currency for payouts, even though
  you can charge two-decimal amounts"; the divisible-by-100 rule is for manual payouts,
  which paygate never creates. Charges, captures and refunds are plain two-decimal.
- Three-decimal currencies: an earlier edition of the same page ("Three-decimal
  currencies") says Payment Intents, Refunds and Disputes take them in thousandths, and
  require "the least-significant (last) digit to be 0 ... Your integration must round
  amounts to the nearest ten". The current edition no longer has that section but lists
  no other rule; paygate keeps the stricter one, since a refusal here costs a payment that
  Stripe might have taken, never a wrong charge.

paygate never rounds: an amount Stripe cannot take exactly is refused with
:class:`StripeAmountError` (``invalid_amount``) before any call to Stripe, so it is final
and certainly not charged. The same conversion applies to charges, captures
(``amount_to_capture``) and refunds; :func:`money_from_stripe` reads Stripe's amounts back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from domain.currencies import minor_unit_exponent
from domain.errors import ErrorCode, PaygateError
from domain.money import Money


@dataclass(frozen=True, slots=True)
class StripeScale:
    """How Stripe writes one currency: ``amount`` is the amount in major units times
    ``10**exponent``, and must be a multiple of ``multiple_of``."""

    exponent: int
    multiple_of: int = 1


TWO_DECIMAL: Final = StripeScale(2)

# Stripe's "Zero-decimal currencies" list, UGX included as Stripe lists it (the special case
# below overrides it).
ZERO_DECIMAL_CURRENCIES: Final = frozenset(
    "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split()
)
THREE_DECIMAL_CURRENCIES: Final = frozenset("BHD JOD KWD OMR TND".split())

# Stripe's "Special cases" table, row by row. HUF and TWD are listed so that a reader sees
# they were considered: their special rule is for payouts only.
SPECIAL_CASES: Final[Mapping[str, StripeScale]] = MappingProxyType(
    {
        "ISK": StripeScale(2, multiple_of=100),
        "HUF": TWO_DECIMAL,
        "TWD": TWO_DECIMAL,
        "UGX": StripeScale(2, multiple_of=100),
    }
)

STRIPE_SCALES: Final[Mapping[str, StripeScale]] = MappingProxyType(
    {
        **dict.fromkeys(sorted(ZERO_DECIMAL_CURRENCIES), StripeScale(0)),
        **dict.fromkeys(sorted(THREE_DECIMAL_CURRENCIES), StripeScale(3, multiple_of=10)),
        **SPECIAL_CASES,
    }
)


def stripe_scale(currency: str) -> StripeScale:
    """Stripe's scale for an upper-case ISO code; two-decimal unless Stripe says otherwise."""
    return STRIPE_SCALES.get(currency, TWO_DECIMAL)


class StripeAmountError(PaygateError):
    """``invalid_amount``: Stripe cannot take this amount exactly (a fraction of a currency
    Stripe counts in whole units, or not a multiple Stripe accepts). Raised while building
    the request, so nothing was sent: final, and certainly not charged."""

    def __init__(self, money: Money, why: str, *, param: str = "amount") -> None:
        super().__init__(
            ErrorCode.INVALID_AMOUNT,
            f"the Stripe provider cannot send {money} exactly: {why}",
            param=param,
        )
        self.money = money


def _rescaled(value: int, from_exponent: int, to_exponent: int) -> int | None:
    """``value`` counted in 10**-from_exponent units, recounted in 10**-to_exponent units;
    None when that is not a whole number."""
    shift = to_exponent - from_exponent
    factor: int = 10 ** abs(shift)  # typeshed types int ** int as Any: it may be a float
    if shift >= 0:
        return value * factor
    whole, rest = divmod(value, factor)
    return None if rest else whole


def to_stripe_amount(money: Money, *, param: str = "amount") -> int:
    """Stripe's ``amount`` for ``money``; raises :class:`StripeAmountError` when there is
    no exact one."""
    scale = stripe_scale(money.currency)
    amount = _rescaled(money.minor_units, money.exponent, scale.exponent)
    if amount is None:
        decimals = (
            "in whole units only"
            if scale.exponent == 0
            else f"with at most {scale.exponent} decimals"
        )
        raise StripeAmountError(money, f"Stripe takes {money.currency} {decimals}", param=param)
    if amount % scale.multiple_of:
        step = _major(scale.multiple_of, scale.exponent)
        raise StripeAmountError(
            money,
            f"Stripe takes {money.currency} only in multiples of {step} {money.currency}",
            param=param,
        )
    return amount


def _major(amount: int, exponent: int) -> str:
    """``amount`` in 10**-exponent units, written in major units ("0.010", "1.00")."""
    whole, rest = divmod(amount, 10**exponent)
    return f"{whole}.{rest:0{exponent}d}" if exponent else str(whole)


def money_from_stripe(amount: object, currency: object) -> Money:
    """paygate's Money for a positive ``amount`` in Stripe's answer, in ``currency`` as
    Stripe writes it (lower case). Raises ValueError for an answer that is not one: not a
    positive integer, a currency paygate does not know, or an amount with no exact ISO
    4217 equivalent (such as 1050 ISK, ten and a half krónur)."""
    if not isinstance(currency, str):
        raise ValueError("Stripe's answer has no currency")
    code = currency.upper()
    exponent = minor_unit_exponent(code)
    if exponent is None:
        raise ValueError(f"Stripe's answer is in {currency!r}, a currency paygate does not know")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError(f"Stripe's answer has no positive amount ({amount!r})")
    minor = _rescaled(amount, stripe_scale(code).exponent, exponent)
    if minor is None:
        raise ValueError(f"Stripe's amount {amount} {code} has no exact ISO 4217 equivalent")
    try:
        return Money(minor, code)
    except PaygateError as exc:
        raise ValueError(f"Stripe's amount {amount} {code} is out of paygate's range") from exc


def check_answered_amount(asked: Money, amount: object, currency: object) -> None:
    """Raises ValueError unless Stripe's answer (``amount`` and ``currency`` of the object
    it created) is ``asked``: a different amount means Stripe did not do what paygate asked,
    so the outcome must not be read as the answer to this request."""
    answered = money_from_stripe(amount, currency)
    if answered != asked:
        raise ValueError(f"Stripe's answer is for {answered}, not the {asked} asked")
