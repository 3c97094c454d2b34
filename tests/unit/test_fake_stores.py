"""The fakes the handler tests stand on: they implement the consumer's ports, and they keep
the claim rules of persistence.claims (a fake that let a former owner write would make
every ownership test pass for nothing)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from consumer.ports import CaptureWrites, PaymentWrites, RefundWrites, StrayLeads, StrayRecords
from domain.money import Money
from domain.status import PaymentStatus
from persistence.attempts import ATTEMPT_SUCCEEDED
from persistence.outbox import OutboxMessage
from persistence.payment_begin import Started
from persistence.stray_store import StrayCandidate
from tests.support.builders import create_payment, unexpected_refusal
from tests.support.clock import Clock
from tests.support.fake_claims import ClaimSlot
from tests.support.fake_stores import (
    LEASE,
    FakeCaptureStore,
    FakeDatabase,
    FakePaymentStore,
    FakeRefundStore,
    FakeStrayRecords,
)

pytestmark = pytest.mark.unit


def test_each_fake_implements_its_port(db: FakeDatabase) -> None:
    # Typed, so mypy checks each fake against its Protocol; the loop checks the same names
    # at run time.
    fakes: tuple[PaymentWrites, RefundWrites, CaptureWrites, StrayRecords] = (
        FakePaymentStore(db),
        FakeRefundStore(db),
        FakeCaptureStore(db),
        FakeStrayRecords(db),
    )
    ports = (PaymentWrites, RefundWrites, CaptureWrites, StrayRecords)
    for fake, port in zip(fakes, ports, strict=True):
        members = {name: vars(port)[name] for name in vars(port) if not name.startswith("_")}
        assert members
        for name, member in members.items():
            value = getattr(fake, name, None)
            assert value is not None, f"{port.__name__}.{name}"
            # A property of the port (the claim lease) is a value of the fake; the rest, methods.
            assert isinstance(member, property) or callable(value), f"{port.__name__}.{name}"


def test_a_claim_is_taken_only_when_free_or_expired_and_always_with_a_fresh_token(
    clock: Clock,
) -> None:
    slot = ClaimSlot()
    first = slot.take(clock.now, LEASE)
    assert first is not None
    assert slot.take(clock.now + LEASE - timedelta(microseconds=1), LEASE) is None
    second = slot.take(clock.now + LEASE, LEASE)  # expired: its owner may be dead
    assert second is not None
    assert second.token != first.token
    assert not slot.renew(first.token, clock.now + 2 * LEASE)
    slot.release(first.token)  # not the holder's: a no-op
    assert slot.held_by(second.token)


async def started(store: FakePaymentStore) -> tuple[str, Started]:
    command = create_payment()
    begun = await store.begin(
        command, provider="p", account_key=b"k", refusal_event=unexpected_refusal
    )
    assert isinstance(begun, Started)
    return command.payment_request_id, begun


async def test_after_a_takeover_the_former_owners_writes_change_nothing(db: FakeDatabase) -> None:
    store = FakePaymentStore(db)
    pid, begun = await started(store)
    token = begun.claim.token
    holder = store.take_over(pid)

    assert not await store.renew(pid, token)
    assert not await store.schedule_retry(pid, db.clock(), claim=token)
    assert await store.next_attempt(pid, begun.attempt_key, "q", claim=token) is None
    await store.release(pid, token)
    assert not await store.finish(
        pid,
        begun.attempt_key,
        claim=token,
        status=PaymentStatus.SUCCEEDED,
        attempt_status=ATTEMPT_SUCCEEDED,
        provider_reference="ch_late",
        error=None,
        event=OutboxMessage("e", "t", "k", b""),
    )

    row = store.row(pid)
    assert (row.view.status, row.claim.token, db.outbox) == (PaymentStatus.PROCESSING, holder, [])
    # A charge the former owner learned of is kept on its attempt, never dropped.
    assert row.attempts[0].provider_reference == "ch_late"


async def test_an_open_attempt_is_claimed_by_one_taker_only(db: FakeDatabase) -> None:
    store = FakePaymentStore(db)
    pid, begun = await started(store)
    await store.release(pid, begun.claim.token)

    first, second = await store.claim(pid), await store.claim(pid)

    assert first is not None
    assert second is None
    assert first.attempt_key == begun.attempt_key


async def test_a_stray_mark_read_before_a_reopen_changes_nothing(db: FakeDatabase) -> None:
    """As the store's check generation: a reopen between the sweep's read and its mark
    wins, and the key is offered again, at the new generation."""
    records = FakeStrayRecords(db)
    leads: StrayLeads = records
    records.unexamined.append(
        StrayCandidate("pay_1-a1", "pay_1", "p", Money(100, "EUR"), PaymentStatus.FAILED, None)
    )
    (read,) = await records.candidates(db.clock(), 10)

    assert await leads.reopen("pay_1-a1", "p")
    assert not await records.mark_verified(read)
    (again,) = await records.candidates(db.clock(), 10)
    assert again.generation == read.generation + 1
    assert await records.mark_verified(again)
    assert await records.candidates(db.clock(), 10) == []
    assert await leads.reopen("pay_1-a1", "p")  # a notice after the mark: offered again
    assert [c.attempt_key for c in await records.candidates(db.clock(), 10)] == ["pay_1-a1"]
    assert not await leads.reopen("pay_1-a1", "other")  # no attempt of that provider
    assert not await leads.reopen("pay_9-a1", "p")  # no such attempt


async def test_a_stray_stamp_moves_a_key_back_until_a_reopen(db: FakeDatabase) -> None:
    """As the store's order: keys never asked first, then by their stamp; a stamp read
    before a reopen changes nothing, and a reopen brings a stamped key to the front."""
    records = FakeStrayRecords(db)
    leads: StrayLeads = records
    for key in ("pay_1-a1", "pay_2-a1"):
        records.unexamined.append(
            StrayCandidate(key, key[:5], "p", Money(100, "EUR"), PaymentStatus.FAILED, None)
        )
    first, _ = await records.candidates(db.clock(), 10)

    assert await records.ask_again_at(first, db.clock())
    assert [c.attempt_key for c in await records.candidates(db.clock(), 10)] == [
        "pay_2-a1",
        "pay_1-a1",
    ]
    assert await leads.reopen("pay_1-a1", "p")
    reopened = [c.attempt_key for c in await records.candidates(db.clock(), 10)]
    assert reopened == ["pay_1-a1", "pay_2-a1"]
    assert not await records.ask_again_at(first, db.clock())  # read before the reopen
    assert [c.attempt_key for c in await records.candidates(db.clock(), 10)] == reopened
