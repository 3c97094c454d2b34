"""A watch (``ResultWaiters.watch``): registered before its command is published, it needs
no look in the store before waiting, misses no result seen while publishing, and reads the
store once only when its time runs out. No I/O, no real sleeps (a zero timeout)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from domain.status import PaymentStatus
from http_facade.result_waiters import ResultWaiters

pytestmark = pytest.mark.unit

PAYMENT_ID = "pay_" + "b" * 32


class CountingStore:
    """Payment and refund lookups that count how often the store was read."""

    def __init__(self, *, final: bool) -> None:
        self.final = final
        self.reads: list[str] = []

    async def get_payment(self, payment_request_id: str) -> SimpleNamespace | None:
        self.reads.append(payment_request_id)
        return SimpleNamespace(status=PaymentStatus.SUCCEEDED) if self.final else None

    async def get(self, refund_id: str) -> None:
        self.reads.append(refund_id)


def waiters_on(store: CountingStore) -> ResultWaiters:
    return ResultWaiters(queries=store, refunds=store)  # type: ignore[arg-type]


async def test_a_result_seen_while_publishing_ends_the_wait_without_reading_the_store() -> None:
    store = CountingStore(final=True)
    waiters = waiters_on(store)
    with waiters.watch(PAYMENT_ID) as watch:
        waiters.final_seen(PAYMENT_ID)  # the result came before the publish returned
        assert await watch.final(10.0)
    assert store.reads == []


async def test_a_watch_whose_time_runs_out_reads_the_store_once() -> None:
    found = CountingStore(final=True)
    with waiters_on(found).watch(PAYMENT_ID) as watch:
        assert await watch.final(0)
    assert found.reads == [PAYMENT_ID]

    missing = CountingStore(final=False)
    with waiters_on(missing).watch(PAYMENT_ID) as watch:
        assert not await watch.final(0)
    assert missing.reads == [PAYMENT_ID]


async def test_a_watch_is_registered_until_it_ends_and_then_forgotten() -> None:
    store = CountingStore(final=False)
    waiters = waiters_on(store)
    with waiters.watch(PAYMENT_ID):
        await waiters.recheck_store()  # a reconnected listener re-checks what is watched
        assert store.reads == [PAYMENT_ID]
    await waiters.recheck_store()
    assert store.reads == [PAYMENT_ID]


async def test_wait_for_final_still_looks_in_the_store_first() -> None:
    store = CountingStore(final=True)
    assert await waiters_on(store).wait_for_final(PAYMENT_ID, 10.0)
    assert store.reads == [PAYMENT_ID]


async def test_a_refusal_ends_only_the_wait_of_the_request_it_refused() -> None:
    """Three requests wait for one payment: the one whose command was refused registered
    its refusal's event id; the payment's own request and another refused one did not,
    or another id. The refusal wakes the first only; the others run out their time and
    read the store (not final yet), as they would have without it."""
    store = CountingStore(final=False)
    waiters = waiters_on(store)
    with (
        waiters.watch(PAYMENT_ID, refusal_event_id="refusal-1") as refused,
        waiters.watch(PAYMENT_ID) as owner,
        waiters.watch(PAYMENT_ID, refusal_event_id="refusal-2") as other,
    ):
        waiters.refusal_seen(PAYMENT_ID, "refusal-1")
        waiters.refusal_seen("pay_" + "c" * 32, "refusal-2")  # another payment's
        assert await refused.final(10.0)
        assert store.reads == []
        assert not await owner.final(0)
        assert not await other.final(0)
    assert store.reads == [PAYMENT_ID, PAYMENT_ID]


async def test_a_final_result_ends_every_wait_for_its_id_refused_or_not() -> None:
    """The payment's own final result ends the refused request's wait as well: it then
    reads the payment, sees other parameters and answers 409 (payments_routes)."""
    store = CountingStore(final=False)
    waiters = waiters_on(store)
    with (
        waiters.watch(PAYMENT_ID, refusal_event_id="refusal-1") as refused,
        waiters.watch(PAYMENT_ID) as owner,
    ):
        waiters.final_seen(PAYMENT_ID)
        assert await refused.final(10.0)
        assert await owner.final(10.0)
    assert store.reads == []
