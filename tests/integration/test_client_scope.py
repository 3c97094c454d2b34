"""Payments are scoped by API client in the store: orders, keys and listings."""

from __future__ import annotations

import dataclasses

import pytest

from consumer.outcome import Outcome
from domain.errors import ErrorCode
from persistence.payment_store import PaymentStore
from tests.support.builders import DECLINED_CARD, create_payment
from tests.support.sandbox_handler import sandbox_payment_handler

pytestmark = pytest.mark.integration


@pytest.fixture
async def handler(engine):
    """On the real clock, not the shared standing one: pages list payments in the order they
    were created, which equal timestamps would leave to their ids."""
    async with sandbox_payment_handler(engine) as handler:
        yield handler


async def test_two_clients_with_the_same_order_and_key_make_two_payments(handler, engine):
    alice = dataclasses.replace(
        create_payment(order_id="order-1", idempotency_key="key-1"), client_id="alice"
    )
    bob = dataclasses.replace(alice, client_id="bob")
    upstream = dataclasses.replace(alice, client_id=None)
    assert len({alice.payment_request_id, bob.payment_request_id, upstream.payment_request_id}) == 3
    # Order protection is per client: bob's order-1 is not alice's.
    assert await handler.handle(alice) is Outcome.SUCCEEDED
    assert await handler.handle(bob) is Outcome.SUCCEEDED
    assert await handler.handle(upstream) is Outcome.SUCCEEDED
    store = PaymentStore(engine)
    assert [p.payment_request_id for p in await store.order_payments("order-1", "alice")] == [
        alice.payment_request_id
    ]
    stored = await store.get_payment(bob.payment_request_id)
    assert stored is not None
    assert stored.client_id == "bob"
    stored = await store.get_payment(upstream.payment_request_id)
    assert stored is not None
    assert stored.client_id is None


async def test_order_protection_still_holds_within_one_client(handler):
    first = dataclasses.replace(create_payment(order_id="order-2"), client_id="alice")
    second = dataclasses.replace(create_payment(order_id="order-2"), client_id="alice")
    assert await handler.handle(first) is Outcome.SUCCEEDED
    assert await handler.handle(second) is Outcome.REFUSED


async def test_a_clients_order_is_listed_page_by_page(handler, engine):
    ids = []
    for i in range(5):
        command = dataclasses.replace(
            create_payment(order_id="order-3", payer_number=DECLINED_CARD),
            client_id="alice",
            new_attempt=i > 0,
        )
        assert await handler.handle(command) is Outcome.FAILED
        ids.append(command.payment_request_id)
    other = dataclasses.replace(create_payment(order_id="order-3"), client_id="bob")
    await handler.handle(other)
    store = PaymentStore(engine)

    seen: list[str] = []
    cursor = None
    while True:
        page = await store.client_order_page("alice", "order-3", limit=2, starting_after=cursor)
        seen.extend(p.payment_request_id for p in page)
        if len(page) < 2:
            break
        cursor = page[-1].payment_request_id
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen)) == 5
    assert all(p.error is not None and p.error.code is ErrorCode.PAYMENT_DECLINED for p in page)
    # Bob's cursor is no cursor for alice.
    assert (
        await store.client_order_page(
            "alice", "order-3", limit=2, starting_after=other.payment_request_id
        )
        == []
    )
