"""Which payment a notification's attempt key names (consumer.provider_notices.payment_id_of):
the key is the provider's word (for Stripe, PaymentIntent metadata anyone holding the
account's API key can write), so a key paygate never made names no payment and is
answered as such, never with a 500."""

from __future__ import annotations

import pytest

from consumer.provider_notices import payment_id_of

pytestmark = pytest.mark.unit


def test_paygates_own_keys_name_their_payment():
    assert payment_id_of("pay_0123456789abcdef-a1") == "pay_0123456789abcdef"
    assert payment_id_of("pay_with-a-dash-a12") == "pay_with-a-dash"


@pytest.mark.parametrize(
    "key",
    [
        "pay_1-a\u00b2",  # superscript two: str.isdigit() says yes, int() says no
        "pay_1-a\u0663",  # Arabic-Indic three: a digit to int(), never one paygate wrote
        "pay_1-a" + "9" * 5000,  # over int()'s 4300-digit limit
        "pay_1-a0",
        "pay_1-a",
        "-a1",
        "pay_1",
        "",
    ],
)
def test_a_key_paygate_never_made_names_no_payment(key):
    # Guard: the isascii() and length test in payment_id_of; without it the first and
    # third raise ValueError (a 500 on the public notification route).
    assert payment_id_of(key) is None
