import pytest

from domain.account_numbers import scrub
from domain.accounts import Account, AccountType, fingerprint_account_number, mask_account_number
from domain.errors import ErrorCode, PaygateError
from domain.status import (
    ALLOWED_TRANSITIONS,
    PaymentStatus,
)
from tests.support.builders import PAYEE_IBAN, SUCCESS_CARD

pytestmark = pytest.mark.unit


def test_masking_keeps_only_the_last_four():
    assert mask_account_number(SUCCESS_CARD) == "****4242"
    assert mask_account_number("1234") == "****"
    assert mask_account_number(PAYEE_IBAN) == "****3000"


def test_account_repr_and_str_never_show_the_number():
    account = Account.parse("card", SUCCESS_CARD, param="payerAccount")
    assert SUCCESS_CARD not in repr(account)
    assert SUCCESS_CARD not in str(account)
    assert str(account) == "card ****4242"


def test_account_ref_is_masked_and_fingerprinted_with_a_key():
    ref = Account(AccountType.CARD, SUCCESS_CARD).ref(b"key-1")
    assert ref.masked == "****4242"
    assert ref.fingerprint == fingerprint_account_number(SUCCESS_CARD, b"key-1")
    assert ref.fingerprint != fingerprint_account_number(SUCCESS_CARD, b"key-2")
    assert SUCCESS_CARD not in ref.fingerprint


@pytest.mark.parametrize(
    ("type_", "number", "param"),
    [
        ("cash", SUCCESS_CARD, "payerAccount.type"),
        ("card", "12", "payerAccount.number"),
        ("card", "4242 4242 4242 4242", "payerAccount.number"),
        ("card", int(SUCCESS_CARD), "payerAccount.number"),
    ],
)
def test_invalid_accounts_are_refused_without_echoing_the_number(type_, number, param):
    with pytest.raises(PaygateError) as caught:
        Account.parse(type_, number, param="payerAccount")
    assert caught.value.code is ErrorCode.INVALID_REQUEST
    assert caught.value.param == param
    assert "4242" not in caught.value.message


def test_log_scrubber_masks_card_numbers_and_leaves_other_numbers():
    # More cases, both ways: tests/unit/test_log_scrubbing.py.
    assert scrub(f"payer {SUCCESS_CARD} paid") == "payer ****4242 paid"
    assert scrub("order-12345678 ok") == "order-12345678 ok"
    assert scrub("amount 1050 cents") == "amount 1050 cents"
    assert scrub("pay_0f3a12345678901234") == "pay_0f3a12345678901234"


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (PaymentStatus.PENDING, PaymentStatus.PROCESSING),
        (PaymentStatus.PROCESSING, PaymentStatus.SUCCEEDED),
        (PaymentStatus.PROCESSING, PaymentStatus.FAILED),
        (PaymentStatus.PROCESSING, PaymentStatus.PENDING),
        (PaymentStatus.PENDING, PaymentStatus.SUCCEEDED),
        (PaymentStatus.PENDING, PaymentStatus.FAILED),
    ],
)
def test_allowed_transitions(current, target):
    assert target in ALLOWED_TRANSITIONS[current]


@pytest.mark.parametrize("final", [s for s in PaymentStatus if s.charge_known])
def test_a_known_charge_outcome_only_moves_forward(final):
    """A captured payment moves only by refunds, an authorized one only by its capture, its
    void or the end of its hold; nothing returns to an unknown outcome or turns into another
    charge outcome."""
    for target in ALLOWED_TRANSITIONS[final]:
        assert target.charge_known
        if final.charge_outcome is PaymentStatus.SUCCEEDED:
            assert target in (PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED)
        else:
            assert final.charge_outcome is PaymentStatus.AUTHORIZED
            assert {final, target} <= {
                PaymentStatus.AUTHORIZED,
                PaymentStatus.CAPTURING,
                PaymentStatus.SUCCEEDED,
                PaymentStatus.CANCELING,
                PaymentStatus.CANCELED,
                PaymentStatus.EXPIRED,
                # Captured and then refunded by hand at the provider before paygate learnt
                # of the capture (domain.provider_refunds).
                PaymentStatus.PARTIALLY_REFUNDED,
                PaymentStatus.REFUNDED,
            }


def test_a_capture_and_a_void_never_follow_one_another():
    """Each starts from authorized only: one under way excludes the other."""
    assert PaymentStatus.CANCELING not in ALLOWED_TRANSITIONS[PaymentStatus.CAPTURING]
    assert PaymentStatus.CAPTURING not in ALLOWED_TRANSITIONS[PaymentStatus.CANCELING]


def test_a_follow_up_may_end_as_the_provider_settled_it_without_paygate():
    """A void that finds the charge captured by hand ends succeeded; a capture that finds
    the hold voided or run out ends released: what the provider holds, never authorized."""
    assert PaymentStatus.SUCCEEDED in ALLOWED_TRANSITIONS[PaymentStatus.CANCELING]
    assert {PaymentStatus.CANCELED, PaymentStatus.EXPIRED} <= ALLOWED_TRANSITIONS[
        PaymentStatus.CAPTURING
    ]


def test_every_status_has_a_transition_entry_and_finality_matches():
    assert set(ALLOWED_TRANSITIONS) == set(PaymentStatus)
    assert {s for s in PaymentStatus if not s.is_final} == {
        PaymentStatus.PENDING,
        PaymentStatus.PROCESSING,
        PaymentStatus.CAPTURING,
        PaymentStatus.REQUIRES_ACTION,
        PaymentStatus.CANCELING,
    }
    assert {s for s, targets in ALLOWED_TRANSITIONS.items() if not targets} == {
        PaymentStatus.FAILED,
        PaymentStatus.REFUNDED,
        PaymentStatus.CANCELED,
        PaymentStatus.EXPIRED,
    }


def test_a_payment_waiting_for_its_payer_ends_a_wait_and_only_the_provider_finishes_it():
    waiting = PaymentStatus.REQUIRES_ACTION
    assert waiting.ends_a_wait
    assert not waiting.is_final
    assert not waiting.charge_known
    assert ALLOWED_TRANSITIONS[waiting] == {
        PaymentStatus.SUCCEEDED,
        PaymentStatus.AUTHORIZED,
        PaymentStatus.FAILED,
        PaymentStatus.EXPIRED,
        # Paid, then refunded in full outside paygate before its word came (Alipay).
        PaymentStatus.REFUNDED,
    }
    # Reached only from a call in flight or in doubt, never from a final status.
    assert {s for s, targets in ALLOWED_TRANSITIONS.items() if waiting in targets} == {
        PaymentStatus.PENDING,
        PaymentStatus.PROCESSING,
    }
    assert PaymentStatus.EXPIRED.is_final
    assert PaymentStatus.EXPIRED.charge_outcome is PaymentStatus.EXPIRED
    assert not PaymentStatus.PENDING.ends_a_wait
