"""The one order in which a write transaction takes its locks on PostgreSQL.

A writer queue's transaction runs the operations of many callers (persistence.group_commit),
in the order they arrived: a payment's finish, then a refund's begin, then a claim taken by
a reconciler... Each operation locks what it changes, so a batch would lock its rows in an
order that depends on what it holds, and two processes' batches (two consumers, a consumer
and a sweep, the operator's settlement command) that lock the same rows in opposite orders
deadlock: PostgreSQL then aborts one of them (SQLSTATE 40P01) after ``deadlock_timeout``.

So every write transaction takes, before its first operation runs, every lock its
operations will need, in one global order:

1. the advisory locks, in the order of their keys: the orders' (payment begins: the rows
   they insert do not exist yet), the rate-limit buckets' (a take writes its client's
   bucket row, or creates it: persistence.rate_limit_store), the webhook endpoints'
   (a write of an endpoint's row or of its deliveries' rows, which the dispatcher, the
   facade and the key commands write: persistence.webhook_store) and the vault's clients'
   (a write of a client's stored tokens, which the facade, the consumer's housekeeping and
   the key commands write: vault.rows). A lock may be taken *shared*: a new token's
   insert takes its client's vault lock shared (inserts of one client do not wait on each
   other), a client's shred takes it exclusive, so the shred waits for every insert under
   way and every later insert waits for the shred, then reads that the client is shredded
   (vault.rows). Shared or exclusive, the locks are taken in the one order of their keys;
   a key a batch needs both ways is taken exclusive;
2. the payment rows, in id order: those the operations name, and the payment of every
   refund they name (a refund's payment never changes);
3. the refund rows, in id order.

Rows reached only through one of these (a payment's attempts, a refund's events) come
after, under the lock of their payment or refund. The operations' own ``FOR UPDATE`` and
``UPDATE`` statements then find their rows already held: a transaction that takes all its
locks in one order waits only on transactions that hold a lock it comes to later, never on
one waiting for a lock it holds, so no cycle can form. An operation declares what it locks
with a :class:`RowLocks`; the writer queue takes the union of its batch's
(:func:`take_locks`), which is the one place the order is written.

An operation whose rows cannot be named before it runs (a sweep over rows chosen by a
query) must not wait on a row lock: it skips the rows others hold (``SKIP LOCKED``) and
leaves them to its next pass.

The vault's data keys' rows are outside the order: a write of a value sealed under a key
(a token's insert, a rewrap's swap, a webhook secret's write) reads that key's row ``FOR
KEY SHARE`` after its declared locks, so that a retire cannot erase the key under it
(persistence.vault_key_guard). That read conflicts only with a retire's ``FOR UPDATE`` of
the row, and a retire holds no other lock and waits on nothing after taking it (it then
only counts, with plain reads, and erases the row's bytes): a retire waits for such writes
or they wait for it, and no cycle can pass through a key row.

On SQLite there are no row locks: a write transaction holds the database's write lock from
``BEGIN IMMEDIATE`` (persistence.engine), and nothing here runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Boolean, Text, bindparam, or_, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence.tables import payments, refunds


@dataclass(frozen=True, slots=True)
class RowLocks:
    """What one operation locks: advisory scopes (orders, rate-limit buckets, webhook
    endpoints, the vault's clients), exclusive or ``shared_scopes``, payments and refunds,
    by id."""

    scopes: frozenset[str] = frozenset()
    payments: frozenset[str] = frozenset()
    refunds: frozenset[str] = frozenset()
    shared_scopes: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        *,
        orders: Iterable[tuple[str | None, str]] = (),
        payments: Iterable[str] = (),
        refunds: Iterable[str] = (),
        buckets: Iterable[str] = (),
        endpoints: Iterable[str] = (),
        vault_clients: Iterable[str | None] = (),
        vault_inserts: Iterable[str] = (),
    ) -> RowLocks:
        """``orders`` as (client id, order id) pairs, as payment begins lock them;
        ``buckets`` the client ids whose rate-limit buckets a take writes; ``endpoints``
        the webhook endpoints whose row or deliveries' rows a write changes;
        ``vault_clients`` the clients (None: upstream services) whose stored tokens a write
        changes or deletes; ``vault_inserts`` the clients a new token is inserted for (their
        vault lock, shared)."""
        return cls(
            frozenset(order_scope(order_id, client_id) for client_id, order_id in orders)
            | frozenset(bucket_scope(client_id) for client_id in buckets)
            | frozenset(endpoint_scope(endpoint_id) for endpoint_id in endpoints)
            | frozenset(vault_scope(client_id) for client_id in vault_clients),
            frozenset(payments),
            frozenset(refunds),
            frozenset(vault_scope(client_id) for client_id in vault_inserts),
        )

    def __bool__(self) -> bool:
        return bool(self.scopes or self.payments or self.refunds or self.shared_scopes)

    @classmethod
    def union(cls, locks: Iterable[RowLocks | None]) -> RowLocks:
        scopes: set[str] = set()
        payment_ids: set[str] = set()
        refund_ids: set[str] = set()
        shared: set[str] = set()
        for lock in locks:
            if lock is not None:
                scopes |= lock.scopes
                payment_ids |= lock.payments
                refund_ids |= lock.refunds
                shared |= lock.shared_scopes
        return cls(
            frozenset(scopes),
            frozenset(payment_ids),
            frozenset(refund_ids),
            frozenset(shared - scopes),
        )


def order_scope(order_id: str, client_id: str | None) -> str:
    """The key of an order's advisory lock: one per (client, order)."""
    return order_id if client_id is None else f"{client_id}\x1f{order_id}"


def bucket_scope(client_id: str) -> str:
    """The key of a rate-limit bucket's advisory lock (apart from the orders' keys)."""
    return f"rate-limit\x1e{client_id}"


def endpoint_scope(endpoint_id: str) -> str:
    """The key of a webhook endpoint's advisory lock, held by every write of its row or of
    its deliveries' rows (apart from the orders' and the buckets' keys)."""
    return f"webhook-endpoint\x1e{endpoint_id}"


def vault_scope(client_id: str | None) -> str:
    """The key of the advisory lock of a client's stored tokens (vault.rows), held by every
    write of one of them; upstream services' tokens (no client) have one of their own."""
    return "vault\x1d" if client_id is None else f"vault\x1e{client_id}"


async def take_locks(conn: AsyncConnection, locks: RowLocks) -> None:
    """Take ``locks`` in the module's order (PostgreSQL; nothing on SQLite)."""
    if conn.dialect.name != "postgresql" or not locks:
        return
    if locks.scopes or locks.shared_scopes:
        await lock_order_scopes(conn, locks.scopes, shared=locks.shared_scopes)
    refund_ids = sorted(locks.refunds)
    if locks.payments or refund_ids:
        await conn.execute(
            _PAYMENTS_IN_ORDER,
            {"payment_ids": sorted(locks.payments), "refund_ids": refund_ids},
        )
    if refund_ids:
        await conn.execute(_REFUNDS_IN_ORDER, {"refund_ids": refund_ids})


async def lock_order_scopes(
    conn: AsyncConnection, scopes: Iterable[str], *, shared: Iterable[str] = ()
) -> None:
    """Advisory locks (orders', buckets'...), held until the transaction ends, in the order
    of their keys, ``shared`` ones shared unless also named in ``scopes`` (PostgreSQL only;
    taking one twice in a transaction is harmless)."""
    exclusive = set(scopes)
    modes = dict.fromkeys(shared, False) | dict.fromkeys(exclusive, True)
    ordered = sorted(modes)
    await conn.execute(
        _LOCK_ORDERS, {"scopes": ordered, "exclusive": [modes[scope] for scope in ordered]}
    )


# Two keys that hash alike are one lock, taken exclusive if either asks for it.
_LOCK_ORDERS: Final = text(
    "SELECT CASE WHEN is_exclusive THEN pg_advisory_xact_lock(h)"
    " ELSE pg_advisory_xact_lock_shared(h) END FROM ("
    " SELECT hashtextextended(s, 0) AS h, bool_or(x) AS is_exclusive"
    " FROM unnest(CAST(:scopes AS text[]), CAST(:exclusive AS boolean[])) AS u(s, x)"
    " GROUP BY h ORDER BY h) AS ordered"
).bindparams(bindparam("scopes", type_=ARRAY(Text)), bindparam("exclusive", type_=ARRAY(Boolean)))

# PostgreSQL locks the rows of a SELECT ... ORDER BY ... FOR UPDATE as the sorted rows come
# out (its LockRows step runs above the sort), so one statement locks them in id order.
_PAYMENTS_IN_ORDER: Final = (
    select(payments.c.id)
    .where(
        or_(
            payments.c.id.in_(bindparam("payment_ids", expanding=True)),
            payments.c.id.in_(
                select(refunds.c.payment_id).where(
                    refunds.c.id.in_(bindparam("refund_ids", expanding=True))
                )
            ),
        )
    )
    .order_by(payments.c.id)
    .with_for_update(of=payments)
)
_REFUNDS_IN_ORDER: Final = (
    select(refunds.c.id)
    .where(refunds.c.id.in_(bindparam("refund_ids", expanding=True)))
    .order_by(refunds.c.id)
    .with_for_update()
)
