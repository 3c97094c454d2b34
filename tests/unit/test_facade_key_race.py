"""Two create-and-wait requests that reuse one Idempotency-Key with other parameters and
cross in flight: neither saw the other's payment when it checked the key, so both publish,
the consumer charges the first and refuses the second (a result ``idempotency_conflict``
under the same payment id), and that result, or the first one's, ends the second's wait.

The second client must hear ``409 idempotency_conflict``, never ``200`` with the first
client's payment as if its own command (another amount) were the charge. Each waiting
request names the refusal that would answer its own command (``conflict_event_id`` of its
parameters), so another request's refusal never ends its wait; and a wait that ends while
the payment (refund) reads as pending still answers the 202 of a result not known yet, not
a 200, which promises the final result.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from domain.errors import ErrorCode
from domain.events import conflict_event_id
from domain.payments import CreatePayment
from domain.refunds import RefundPayment, RefundStatus
from domain.status import PaymentStatus
from tests.support.facade_world import ACCOUNT_KEY, KEY_1, World, payment_body, world_client

pytestmark = pytest.mark.unit


async def _post(
    world: World, path: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    client = await world_client(world)
    try:
        response = await client.post(
            path,
            data=json.dumps(body),
            headers={
                "Authorization": f"Bearer {KEY_1}",
                "Content-Type": "application/json",
                **headers,
            },
        )
        return response.status, await response.json()
    finally:
        await client.close()


async def _pay(world: World, amount: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    return await _post(world, "/v1/payments", payment_body(amount=amount), headers)


async def _refund(
    world: World, payment_id: str, amount: str, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    body = {"amount": amount, "currency": "EUR"}
    return await _post(world, f"/v1/payments/{payment_id}/refunds", body, headers)


async def _crossing_payment(second_amount: str) -> tuple[int, dict[str, Any]]:
    """A payment of 10.00 under key ``k-1``, then a second request under the same key for
    ``second_amount``, during whose wait the consumer charges the first: the second's
    answer."""
    world = World()
    status, _ = await _pay(world, "10.00", {"Idempotency-Key": "k-1"})
    assert status == 202
    first_command = world.last()
    assert isinstance(first_command, CreatePayment)

    # The first command is still in Kafka when the second request checks the key; the
    # consumer charges it (and refuses the second) while the second request waits.
    def consumer_charges_the_first(w: World) -> None:
        w.settle_payment(first_command, PaymentStatus.SUCCEEDED)

    world.while_waiting = consumer_charges_the_first
    return await _pay(world, second_amount, {"Idempotency-Key": "k-1", "Prefer": "wait=5"})


async def _crossing_refund(second_amount: str) -> tuple[int, dict[str, Any]]:
    """A refund of 5.00 of a paid payment under key ``r-1``, then a second request under the
    same key for ``second_amount``, during whose wait the consumer refunds the first: the
    second's answer."""
    world = World()
    payment_id = await _paid(world)
    status, _ = await _refund(world, payment_id, "5.00", {"Idempotency-Key": "r-1"})
    assert status == 202
    first_command = world.last()
    assert isinstance(first_command, RefundPayment)

    def consumer_refunds_the_first(w: World) -> None:
        w.settle_refund(first_command, RefundStatus.SUCCEEDED)

    world.while_waiting = consumer_refunds_the_first
    return await _refund(
        world, payment_id, second_amount, {"Idempotency-Key": "r-1", "Prefer": "wait=5"}
    )


async def _paid(world: World) -> str:
    status, body = await _pay(world, "10.00", {"Idempotency-Key": "p-1"})
    assert status == 202
    command = world.last()
    assert isinstance(command, CreatePayment)
    world.settle_payment(command, PaymentStatus.SUCCEEDED)
    payment_id: str = body["paymentRequestId"]
    return payment_id


async def test_a_crossing_request_with_other_parameters_is_refused_after_its_wait() -> None:
    status, second = await _crossing_payment("20.00")
    # Not 200 with the 10.00 payment, as if the 20.00 asked for were charged.
    assert (status, second.get("amount")) == (409, None)
    assert second["error"]["code"] == ErrorCode.IDEMPOTENCY_CONFLICT.value


async def test_a_crossing_request_with_the_same_parameters_gets_the_payment() -> None:
    status, second = await _crossing_payment("10.00")
    assert (status, second["status"], second["amount"]) == (200, "succeeded", "10.00")


async def test_a_crossing_refund_with_other_parameters_is_refused_after_its_wait() -> None:
    status, second = await _crossing_refund("3.00")
    # Not 200 with the 5.00 refund, as if the 3.00 asked for were refunded.
    assert (status, second.get("amount")) == (409, None)
    assert second["error"]["code"] == ErrorCode.IDEMPOTENCY_CONFLICT.value


async def test_a_crossing_refund_with_the_same_parameters_gets_the_refund() -> None:
    status, second = await _crossing_refund("5.00")
    assert (status, second["status"], second["amount"]) == (200, "succeeded", "5.00")


async def test_a_wait_ended_by_a_crossing_refusal_while_the_payment_is_pending_is_202() -> None:
    # The first request's payment stays pending (its provider timed out) as the store
    # reads when the wait ends (a lagging read, say).
    world = World()

    def consumer_leaves_it_pending(w: World) -> None:
        command = w.last()
        assert isinstance(command, CreatePayment)
        w.settle_payment(command, PaymentStatus.PENDING)

    world.while_waiting = consumer_leaves_it_pending
    status, body = await _pay(world, "10.00", {"Idempotency-Key": "k-1", "Prefer": "wait=5"})
    # Not 200, which promises the final result: the payment is not final.
    assert (status, body["status"]) == (202, "pending")


async def test_a_refund_wait_ended_while_the_refund_is_pending_is_202() -> None:
    world = World()
    payment_id = await _paid(world)

    def consumer_leaves_it_pending(w: World) -> None:
        command = w.last()
        assert isinstance(command, RefundPayment)
        w.settle_refund(command, RefundStatus.PENDING)

    world.while_waiting = consumer_leaves_it_pending
    status, body = await _refund(
        world, payment_id, "5.00", {"Idempotency-Key": "r-1", "Prefer": "wait=5"}
    )
    # The 202 of a refund on its way (processing), as without the wait.
    assert (status, body["status"]) == (202, "processing")


async def test_each_waiting_request_names_the_refusal_of_its_own_parameters() -> None:
    """The refusal the consumer publishes for a command is conflict_event_id(id, its
    fingerprint): the waiter is given exactly that, for payments and refunds alike."""
    world = World()
    status, _ = await _pay(world, "20.00", {"Idempotency-Key": "k-1", "Prefer": "wait=5"})
    assert status == 202  # nothing final within the wait
    command = world.last()
    assert isinstance(command, CreatePayment)
    vaulted = dataclasses.replace(
        command, payer=world.vaulted(command.payer), payee=world.vaulted(command.payee)
    )
    fingerprint = vaulted.parameters_fingerprint(ACCOUNT_KEY)
    assert world.refusals_awaited == [conflict_event_id(command.payment_request_id, fingerprint)]

    payment_id = await _paid(world)
    await _refund(world, payment_id, "3.00", {"Idempotency-Key": "r-1", "Prefer": "wait=5"})
    refund = world.last()
    assert isinstance(refund, RefundPayment)
    assert world.refusals_awaited[-1] == conflict_event_id(
        refund.refund_id, refund.parameters_fingerprint()
    )


async def test_a_crossing_request_without_a_wait_learns_of_the_conflict_by_its_retry() -> None:
    """Without ``Prefer: wait`` both crossing requests are answered before the consumer
    decides: each gets the 202 of the one payment id their key names. The one the consumer
    refused cannot be told then; its ``Location`` shows the other request's payment (its
    amount, not the one asked for), and its retry with the same key answers 409, never
    200 with that payment."""
    world = World()
    first_status, first = await _pay(world, "10.00", {"Idempotency-Key": "k-1"})
    first_command = world.last()
    second_status, second = await _pay(world, "20.00", {"Idempotency-Key": "k-1"})
    assert (first_status, second_status) == (202, 202)
    assert first["paymentRequestId"] == second["paymentRequestId"]
    assert isinstance(first_command, CreatePayment)
    world.settle_payment(first_command, PaymentStatus.SUCCEEDED)

    client = await world_client(world)
    try:
        response = await client.get(
            f"/v1/payments/{second['paymentRequestId']}",
            headers={"Authorization": f"Bearer {KEY_1}"},
        )
        shown = await response.json()
    finally:
        await client.close()
    # What the 202 pointed at is the first request's charge: its amount tells them apart.
    assert (shown["status"], shown["amount"]) == ("succeeded", "10.00")

    retry_status, retry = await _pay(world, "20.00", {"Idempotency-Key": "k-1"})
    assert (retry_status, retry["error"]["code"]) == (409, ErrorCode.IDEMPOTENCY_CONFLICT.value)
