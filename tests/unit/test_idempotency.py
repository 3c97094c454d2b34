import dataclasses

import pytest

from domain.idempotency import OrderPayment, resolve_key
from domain.payments import payment_request_id_for
from domain.status import PaymentStatus
from tests.support.builders import create_payment

pytestmark = pytest.mark.unit


def _payment(key: str, generation: int, *, expired: bool) -> OrderPayment:
    return OrderPayment(
        payment_request_id_for("order-1", key, generation),
        key,
        PaymentStatus.FAILED,
        key_expired=expired,
    )


def test_an_unused_key_starts_generation_zero():
    resolution = resolve_key([_payment("other", 0, expired=False)], "key-1")
    assert resolution.live_payment_id is None
    assert resolution.next_generation == 0


def test_a_live_key_stands_for_its_payment():
    resolution = resolve_key([_payment("key-1", 0, expired=False)], "key-1")
    assert resolution.live_payment_id == payment_request_id_for("order-1", "key-1")


def test_an_expired_key_makes_a_new_generation():
    payments = [_payment("key-1", 0, expired=True), _payment("key-1", 1, expired=True)]
    resolution = resolve_key(payments, "key-1")
    assert resolution.live_payment_id is None
    assert resolution.next_generation == 2


def test_generation_zero_ids_are_the_ids_of_before_and_others_differ():
    first = payment_request_id_for("order-1", "key-1")
    assert payment_request_id_for("order-1", "key-1", 0) == first
    assert payment_request_id_for("order-1", "key-1", 1) != first


def test_a_commands_payment_id_follows_its_generation_through_replace() -> None:
    command = create_payment()
    assert command.payment_request_id == payment_request_id_for(
        command.order_id, command.idempotency_key
    )
    later = dataclasses.replace(command, generation=2)
    assert later.payment_request_id == payment_request_id_for(
        command.order_id, command.idempotency_key, 2
    )
    assert later != command
    assert dataclasses.replace(later, generation=0) == command


def test_of_generation_keeps_the_command_when_its_generation_is_unchanged() -> None:
    """The begin resolves every command's generation; the same one must not be copied (a
    copy derives the payment id again), another one must carry its own id."""
    command = create_payment()
    assert command.of_generation(0) is command
    later = command.of_generation(3)
    assert later.generation == 3
    assert later.payment_request_id == payment_request_id_for(
        command.order_id, command.idempotency_key, 3
    )
    assert later.of_generation(0) == command


def test_remembered_payment_ids_are_the_derived_ones_for_every_scope() -> None:
    """The id derivation remembers recent answers; each must still be its own scope's."""
    derive = payment_request_id_for.__wrapped__
    scopes = [("order-1", "key-1", 0, None), ("order-1", "key-1", 0, "client-a")]
    scopes += [("order-1", "key-1", 1, "client-a"), ("order-1", "key-2", 0, None)]
    for _ in range(2):  # the second round answers from memory
        ids = [payment_request_id_for(*scope) for scope in scopes]
        assert ids == [derive(*scope) for scope in scopes]
        assert len(set(ids)) == len(scopes)
