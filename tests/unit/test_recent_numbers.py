"""vault.recent_numbers: bounded in count and in time, taken once, scoped, never shown."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.accounts import Account, AccountType
from domain.errors import ErrorCode, PaygateError
from tests.support.builders import ACCOUNT_KEY, SUCCESS_CARD
from tests.support.clock import Clock
from tests.support.fake_vault_rows import FakeVaultRows
from tests.support.vault_keys import KEK_1
from vault.kek import LocalKeyEncryptionKeys
from vault.recent_numbers import RecentNumbers
from vault.vault import Vault

pytestmark = pytest.mark.unit

CARD = Account(AccountType.CARD, SUCCESS_CARD)


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _recent(capacity: int = 4, hold_s: float = 10.0) -> tuple[RecentNumbers, Monotonic]:
    clock = Monotonic()
    return RecentNumbers(capacity=capacity, hold_s=hold_s, monotonic=clock), clock


async def test_a_number_is_taken_once_in_its_clients_scope() -> None:
    recent, _ = _recent()
    recent.put("pm_a", CARD, client_id="acme", expires_at=None)
    recent.put("pm_b", CARD, client_id="acme", expires_at=None)
    assert recent.take("pm_a", "other") is None  # another client's: refused, and dropped
    assert recent.take("pm_a", "acme") is None
    held = recent.take("pm_b", "acme")
    assert held is not None
    assert held.account == CARD
    assert recent.take("pm_b", "acme") is None
    assert len(recent) == 0


async def test_a_stale_number_is_never_handed_out() -> None:
    recent, clock = _recent(hold_s=10.0)
    recent.put("pm_a", CARD, client_id=None, expires_at=None)
    clock.now += 10.0
    assert recent.take("pm_a", None) is None


async def test_stale_numbers_are_dropped_oldest_first() -> None:
    recent, clock = _recent(hold_s=10.0)
    recent.put("pm_a", CARD, client_id=None, expires_at=None)
    clock.now += 6.0
    recent.put("pm_b", CARD, client_id=None, expires_at=None)
    clock.now += 4.0
    recent.drop_stale()
    assert len(recent) == 1
    assert recent.take("pm_b", None) is not None
    recent.clear()


async def test_the_count_is_bounded_the_oldest_dropped() -> None:
    recent, _ = _recent(capacity=2)
    for token in ("pm_a", "pm_b", "pm_c"):
        recent.put(token, CARD, client_id=None, expires_at=None)
    assert len(recent) == 2
    assert recent.take("pm_a", None) is None
    assert recent.take("pm_c", None) is not None
    recent.clear()


async def test_the_number_is_not_in_any_repr() -> None:
    recent, _ = _recent()
    recent.put("pm_a", CARD, client_id=None, expires_at=None)
    held = recent.take("pm_a", None)
    assert SUCCESS_CARD not in repr(held)
    assert SUCCESS_CARD not in repr(recent)


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        RecentNumbers(capacity=0)
    with pytest.raises(ValueError, match="must be positive"):
        RecentNumbers(capacity=1, hold_s=0)


def _vault(rows: FakeVaultRows, clock: Clock, recent: RecentNumbers | None) -> Vault:
    return Vault(
        rows,
        LocalKeyEncryptionKeys.from_text(KEK_1),
        ACCOUNT_KEY,
        clock=clock,
        primary_refresh_s=30.0,
        recent=recent,
    )


async def test_a_held_number_survives_rotate_rewrap_retire_and_so_does_its_row() -> None:
    """The held number needs no data key; its row, moved by the rewrap, still opens."""
    rows, clock = FakeVaultRows(), Clock()
    recent, _ = _recent()
    vault = _vault(rows, clock, recent)
    vaulted = await vault.tokenize(CARD, client_id="acme", expires_in=timedelta(days=1))
    old_key = rows.entries[vaulted.token].key_id
    clock.now += timedelta(seconds=1)  # the successor is the newer key
    await vault.rotate()
    assert (await vault.rewrap()).values_moved == 1
    clock.now += timedelta(seconds=60)  # twice primary_refresh_s after the successor
    await vault.retire(old_key)
    assert await vault.reveal(vaulted, client_id="acme") == CARD  # held: taken from memory
    assert len(recent) == 0
    assert await vault.reveal(vaulted, client_id="acme") == CARD  # read and decrypted


async def test_a_held_number_of_a_deleted_token_is_refused_like_a_row() -> None:
    rows, clock = FakeVaultRows(), Clock()
    recent, _ = _recent()
    vault = _vault(rows, clock, recent)
    vaulted = await vault.tokenize(CARD, client_id=None)
    del rows.entries[vaulted.token]  # deleted by another process
    with pytest.raises(PaygateError) as refused:
        await vault.reveal(vaulted, client_id=None)
    assert refused.value.code is ErrorCode.PAYMENT_METHOD_NOT_FOUND
    assert SUCCESS_CARD not in str(refused.value)
    assert len(recent) == 0


async def test_a_number_put_again_is_as_young_as_its_last_put() -> None:
    # A token two commands name (a merchant's saved payee, a redelivery's recheck) is put
    # again while still held. Kept at its first place, the young entry stood at the head of
    # the age order, and drop_stale (and the timer) stopped at it: every number behind it,
    # never taken (a refused or replayed command's), stayed in memory past hold_s for as
    # long as that token kept being put.
    recent, clock = _recent(hold_s=10.0)
    recent.put("pm_shared", CARD, client_id=None, expires_at=None)
    recent.put("pm_refused", CARD, client_id=None, expires_at=None)
    clock.now += 5.0
    recent.put("pm_shared", CARD, client_id=None, expires_at=None)
    clock.now += 5.0
    recent.drop_stale()
    assert len(recent) == 1
    assert recent.take("pm_refused", None) is None
    assert recent.take("pm_shared", None) is not None
    recent.clear()
