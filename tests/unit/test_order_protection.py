import pytest

from domain.errors import ErrorCode
from domain.order_protection import refusal_for_new_payment
from domain.status import PaymentStatus as S

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("new_attempt", [False, True])
def test_a_first_payment_is_allowed(new_attempt):
    assert refusal_for_new_payment([], new_attempt=new_attempt) is None


@pytest.mark.parametrize("new_attempt", [False, True])
@pytest.mark.parametrize(
    "existing",
    [[S.SUCCEEDED], [S.FAILED, S.SUCCEEDED], [S.PROCESSING], [S.PENDING], [S.FAILED, S.PENDING]],
)
def test_a_paid_or_unresolved_order_is_never_charged_again(existing, new_attempt):
    refusal = refusal_for_new_payment(existing, new_attempt=new_attempt)
    assert refusal is not None
    assert refusal.code is ErrorCode.ORDER_ALREADY_PAID


def test_after_failures_only_an_explicit_new_attempt_is_allowed():
    refusal = refusal_for_new_payment([S.FAILED, S.FAILED], new_attempt=False)
    assert refusal is not None
    assert refusal.code is ErrorCode.NEW_ATTEMPT_REQUIRED
    assert refusal.param == "newAttempt"
    assert refusal_for_new_payment([S.FAILED], new_attempt=True) is None
