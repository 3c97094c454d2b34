"""What a new token's insert and a client's shred declare (persistence.lock_order): the
client's vault lock, shared for inserts and exclusive for the shred, so inserts of one
client do not wait on each other, and a batch that needs the lock both ways takes it
exclusive."""

from __future__ import annotations

import pytest

from persistence.lock_order import RowLocks, vault_scope

pytestmark = pytest.mark.unit


def test_an_insert_takes_its_clients_vault_lock_shared() -> None:
    locks = RowLocks.of(vault_inserts=["acme"])
    assert locks.scopes == frozenset()
    assert locks.shared_scopes == {vault_scope("acme")}
    assert locks  # declared: the writer queue takes it


def test_a_batch_needing_a_lock_both_ways_takes_it_exclusive() -> None:
    batch = RowLocks.union(
        [
            RowLocks.of(vault_inserts=["acme", "other"]),
            RowLocks.of(vault_clients=["acme"]),
            None,
        ]
    )
    assert batch.scopes == {vault_scope("acme")}
    assert batch.shared_scopes == {vault_scope("other")}
