"""ISO 4217 currencies and their minor-unit exponents.

The exponent says how many decimal places an amount in that currency may have:
USD has 2 (cents), JPY has 0, BHD has 3. Only currencies with a defined exponent
are listed; funds codes and precious metals (XAU, XDR, ...) have none and are not
accepted as payment currencies.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

_EXPONENTS: Final[dict[str, int]] = {
    # exponent 0
    **dict.fromkeys(
        "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split(), 0
    ),
    # exponent 3
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
    # exponent 4
    **dict.fromkeys("CLF UYW".split(), 4),
    # exponent 2: everything else with minor units
    **dict.fromkeys(
        (
            "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD "
            "BTN BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP "
            "ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR "
            "JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU "
            "MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR "
            "RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS "
            "TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG"
        ).split(),
        2,
    ),
}

CURRENCY_EXPONENTS: Final = MappingProxyType(_EXPONENTS)


def minor_unit_exponent(currency: str) -> int | None:
    """The number of decimal places allowed in ``currency``, or None if it is not accepted."""
    return CURRENCY_EXPONENTS.get(currency)
