"""Webhook endpoints and deliveries: what the facade, the CLI and the dispatcher read and
write.

Endpoints belong to one API client: every method that takes a ``client_id`` sees only that
client's endpoints and their deliveries (another client's ids are not found). The signing
secret is returned once, by :meth:`WebhookStore.create_endpoint`; listings never carry it,
and the database holds it only encrypted (:mod:`persistence.webhook_secrets`): a claimed
delivery carries it sealed, and :meth:`WebhookStore.secret_of` opens it for the attempt.

Dispatchers own a delivery's attempt through a claim (:mod:`persistence.claims`): a batch
of due deliveries is claimed with one conditional write, and an attempt's outcome is
recorded only while the recorder's token is still the delivery's. Of two dispatchers, one
sends a given attempt; a dispatcher that stalled past its lease and was replaced records
nothing.

Locks: dispatchers, the facade and the CLI write deliveries from several processes, each
through its writer queue, whose transaction runs many callers' writes in arrival order. So
every write of an endpoint's row or of its deliveries' rows declares the endpoint (an
advisory lock, persistence.lock_order), taken with its batch's other locks before its first
operation: two batches that name the same deliveries in opposite orders queue on each other
instead of deadlocking (tests/integration/test_webhook_lock_order.py). The pruning, whose
rows a query chooses, skips rows another transaction holds.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.clock import utc_now
from domain.webhook_views import CreatedEndpoint, DeliveryInfo, EndpointInfo
from persistence.claims import claim_columns, claimable, held_by, new_claim
from persistence.engine import as_utc, as_utc_or_none
from persistence.group_commit import GroupCommit
from persistence.lock_order import RowLocks
from persistence.webhook_fanout import DELIVERY_DELIVERED, DELIVERY_FAILED, DELIVERY_PENDING
from persistence.webhook_secrets import (
    SecretKeys,
    StoredSecret,
    WebhookSecrets,
    erased_secret,
)
from persistence.webhook_tables import webhook_deliveries, webhook_endpoints

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
# Standard Webhooks: secrets of 24 to 64 random bytes; 32 is what HMAC-SHA256 digests.
_SECRET_BYTES: Final = 32
_ERROR_MAX: Final = 512
ENDPOINT_DELETED: Final = "the endpoint was deleted"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A claimed delivery: send it, then record the outcome with ``token``."""

    id: str
    endpoint_id: str
    url: str
    event_id: str
    attempts: int
    created_at: datetime
    token: str
    secret: StoredSecret = field(repr=False)
    payload: str = field(repr=False)


class WebhookStore:
    def __init__(
        self,
        engine: AsyncEngine,
        writes: GroupCommit,
        clock: Callable[[], datetime] = utc_now,
        secrets: WebhookSecrets | None = None,
    ) -> None:
        """``writes`` is the database's one writer queue (see persistence.database).
        ``secrets`` seals and opens signing secrets: without it (a store only for listing),
        creating an endpoint or opening a secret raises ``RuntimeError``."""
        self._engine = engine
        self._writes = writes
        self._clock = clock
        self._secrets = secrets

    def with_secrets(self, keys: SecretKeys) -> WebhookStore:
        """This store, sealing and opening signing secrets with ``keys`` (the vault)."""
        return WebhookStore(
            self._engine,
            self._writes,
            self._clock,
            WebhookSecrets(self._engine, self._writes, keys),
        )

    @property
    def secrets(self) -> WebhookSecrets:
        if self._secrets is None:
            raise RuntimeError("webhook signing secrets need the vault: use with_secrets()")
        return self._secrets

    # -- endpoints ------------------------------------------------------------------------

    async def create_endpoint(
        self, client_id: str, url: str, enabled_events: Sequence[str], description: str | None
    ) -> CreatedEndpoint:
        now = self._clock()
        info = EndpointInfo(
            id="we_" + uuid.uuid4().hex,
            client_id=client_id,
            url=url,
            description=description,
            enabled_events=sorted(set(enabled_events)),
            created_at=now,
        )
        secret = new_secret()

        async def record(conn: AsyncConnection, key_id: str, ciphertext: bytes) -> None:
            await conn.execute(
                insert(webhook_endpoints).values(
                    id=info.id,
                    client_id=client_id,
                    url=url,
                    description=description,
                    enabled_events=info.enabled_events,
                    secret=None,
                    secret_key_id=key_id,
                    secret_ciphertext=ciphertext,
                    created_at=now,
                    deleted_at=None,
                )
            )

        # A new endpoint's row: no other write can name it before it commits, so it locks
        # nothing of the order (persistence.lock_order). Its data key's row is read FOR KEY
        # SHARE (persistence.vault_key_guard): written only while that key is live.
        await self.secrets.write_sealed(info.id, secret, record, locks=RowLocks())
        return CreatedEndpoint(info, secret)

    async def endpoints(self, client_id: str) -> list[EndpointInfo]:
        """The client's live endpoints, oldest first."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(webhook_endpoints)
                .where(webhook_endpoints.c.client_id == client_id)
                .where(webhook_endpoints.c.deleted_at.is_(None))
                .order_by(webhook_endpoints.c.created_at, webhook_endpoints.c.id)
            )
            return [_endpoint(row._mapping) for row in rows]

    async def endpoint(self, client_id: str, endpoint_id: str) -> EndpointInfo | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(webhook_endpoints)
                    .where(webhook_endpoints.c.id == endpoint_id)
                    .where(webhook_endpoints.c.client_id == client_id)
                    .where(webhook_endpoints.c.deleted_at.is_(None))
                )
            ).one_or_none()
            return None if row is None else _endpoint(row._mapping)

    async def delete_endpoint(self, client_id: str, endpoint_id: str) -> bool:
        """Stop the endpoint; its pending deliveries fail (nothing more is sent to it) and
        its signing secret is erased (the row stays for its deliveries' history). False if
        the client has no such live endpoint."""
        now = self._clock()

        async def record(conn: AsyncConnection) -> bool:
            deleted = await conn.execute(
                update(webhook_endpoints)
                .where(webhook_endpoints.c.id == endpoint_id)
                .where(webhook_endpoints.c.client_id == client_id)
                .where(webhook_endpoints.c.deleted_at.is_(None))
                .values(deleted_at=now, **erased_secret())
            )
            if deleted.rowcount != 1:
                return False
            await conn.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.endpoint_id == endpoint_id)
                .where(webhook_deliveries.c.status == DELIVERY_PENDING)
                .values(
                    status=DELIVERY_FAILED,
                    next_attempt_at=None,
                    last_error=ENDPOINT_DELETED,
                    updated_at=now,
                    **claim_columns(None),
                )
            )
            return True

        return await self._writes.run(record, locks=RowLocks.of(endpoints=[endpoint_id]))

    # -- deliveries, as clients and operators see them ---------------------------------------

    async def deliveries(
        self,
        *,
        client_id: str | None,
        endpoint_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
    ) -> list[DeliveryInfo]:
        """Deliveries, newest first; ``client_id`` None (the CLI) sees every client's."""
        query = (
            select(webhook_deliveries)
            .join(webhook_endpoints, webhook_endpoints.c.id == webhook_deliveries.c.endpoint_id)
            .order_by(webhook_deliveries.c.created_at.desc(), webhook_deliveries.c.id)
            .limit(limit)
        )
        if client_id is not None:
            query = query.where(webhook_endpoints.c.client_id == client_id)
        if endpoint_id is not None:
            query = query.where(webhook_deliveries.c.endpoint_id == endpoint_id)
        if status is not None:
            query = query.where(webhook_deliveries.c.status == status)
        async with self._engine.connect() as conn:
            return [_delivery(row._mapping) for row in await conn.execute(query)]

    async def delivery(self, delivery_id: str) -> DeliveryInfo | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)
                )
            ).one_or_none()
            return None if row is None else _delivery(row._mapping)

    async def retry(
        self, delivery_id: str, *, client_id: str | None, endpoint_id: str | None = None
    ) -> DeliveryInfo | None:
        """Send the delivery again now, whatever its status (a re-send of a delivered one
        carries the same ``webhook-id``, so the receiver can tell). An attempt in flight
        loses its claim: its outcome is not recorded, this one's is. None if the delivery
        is not found, or its endpoint is deleted or not the client's."""
        now = self._clock()
        # A delivery's endpoint never changes: read before, it is the lock the write takes.
        endpoint = endpoint_id or await self._endpoint_of(delivery_id)
        if endpoint is None:
            return None

        async def record(conn: AsyncConnection) -> bool:
            live = (
                select(webhook_endpoints.c.id)
                .where(webhook_endpoints.c.id == webhook_deliveries.c.endpoint_id)
                .where(webhook_endpoints.c.deleted_at.is_(None))
            )
            if client_id is not None:
                live = live.where(webhook_endpoints.c.client_id == client_id)
            statement = (
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id == delivery_id)
                .where(live.exists())
                .values(
                    status=DELIVERY_PENDING,
                    next_attempt_at=now,
                    updated_at=now,
                    **claim_columns(None),
                )
            )
            if endpoint_id is not None:
                statement = statement.where(webhook_deliveries.c.endpoint_id == endpoint_id)
            return bool((await conn.execute(statement)).rowcount)

        if not await self._writes.run(record, locks=RowLocks.of(endpoints=[endpoint])):
            return None
        return await self.delivery(delivery_id)

    async def _endpoint_of(self, delivery_id: str) -> str | None:
        async with self._engine.connect() as conn:
            endpoint: str | None = await conn.scalar(
                select(webhook_deliveries.c.endpoint_id).where(
                    webhook_deliveries.c.id == delivery_id
                )
            )
        return endpoint

    # -- the dispatcher's side ----------------------------------------------------------------

    async def claim_due(
        self,
        limit: int,
        *,
        per_endpoint: int,
        in_flight: Mapping[str, int],
        lease: timedelta,
    ) -> list[DueDelivery]:
        """Claim up to ``limit`` deliveries that are due, oldest due first, at most
        ``per_endpoint`` per endpoint counting the ``in_flight`` ones (endpoint id ->
        attempts this dispatcher has under way): one slow endpoint's backlog never takes
        the places of the others'. A due delivery whose endpoint is deleted is failed
        (``ENDPOINT_DELETED``) instead of returned."""
        if limit <= 0:
            return []
        now = self._clock()
        claim = new_claim(now, lease)
        d = webhook_deliveries
        ranked = (
            select(
                d.c.id,
                d.c.endpoint_id,
                d.c.next_attempt_at,
                func.row_number()
                .over(partition_by=d.c.endpoint_id, order_by=(d.c.next_attempt_at, d.c.id))
                .label("rank"),
            )
            .where(d.c.status == DELIVERY_PENDING)
            .where(d.c.next_attempt_at <= now)
            .where(claimable(d, now))
            .subquery()
        )
        candidates = (
            select(ranked.c.id, ranked.c.endpoint_id)
            .where(ranked.c.rank <= per_endpoint)
            .order_by(ranked.c.next_attempt_at, ranked.c.id)
            .limit(limit + sum(in_flight.values()))
        )

        # Read first, outside the writer queue: an idle dispatcher polls every second, and
        # must not take the database's write lock (SQLite) or a place in the payments'
        # write batches to learn that nothing is due.
        room = {key: per_endpoint - count for key, count in in_flight.items()}
        chosen: list[str] = []
        endpoints: set[str] = set()
        async with self._engine.connect() as reading:
            for row in await reading.execute(candidates):
                if len(chosen) == limit:
                    break
                if room.get(row.endpoint_id, per_endpoint) > 0:
                    room[row.endpoint_id] = room.get(row.endpoint_id, per_endpoint) - 1
                    chosen.append(row.id)
                    endpoints.add(row.endpoint_id)
        if not chosen:
            return []

        async def record(conn: AsyncConnection) -> list[DueDelivery]:
            # Re-checked by the UPDATE itself: a row another dispatcher claimed since the
            # read (PostgreSQL re-evaluates the WHERE on the locked row) is left alone.
            await conn.execute(
                update(d)
                .where(d.c.id.in_(chosen))
                .where(d.c.status == DELIVERY_PENDING)
                .where(claimable(d, now))
                .values(**claim_columns(claim))
            )
            claimed = await conn.execute(
                select(
                    d.c.id,
                    d.c.endpoint_id,
                    d.c.event_id,
                    d.c.payload,
                    d.c.attempts,
                    d.c.created_at,
                    webhook_endpoints.c.url,
                    webhook_endpoints.c.secret,
                    webhook_endpoints.c.secret_key_id,
                    webhook_endpoints.c.secret_ciphertext,
                    webhook_endpoints.c.deleted_at,
                )
                .join(webhook_endpoints, webhook_endpoints.c.id == d.c.endpoint_id)
                .where(and_(d.c.id.in_(chosen), held_by(d, claim.token)))
                .order_by(d.c.next_attempt_at, d.c.id)
            )
            rows = claimed.all()
            orphans = [row.id for row in rows if row.deleted_at is not None]
            if orphans:
                # Queued by a result whose transaction (another process's) read the endpoint
                # live while it was being deleted: failed, as the delete fails the others;
                # nothing is sent to a deleted endpoint, whose secret is erased anyway.
                await conn.execute(
                    update(d)
                    .where(d.c.id.in_(orphans))
                    .values(
                        status=DELIVERY_FAILED,
                        next_attempt_at=None,
                        last_error=ENDPOINT_DELETED,
                        updated_at=now,
                        **claim_columns(None),
                    )
                )
            return [
                DueDelivery(
                    id=row.id,
                    endpoint_id=row.endpoint_id,
                    url=row.url,
                    secret=StoredSecret(row.secret_key_id, row.secret_ciphertext, row.secret),
                    event_id=row.event_id,
                    payload=row.payload,
                    attempts=row.attempts,
                    created_at=as_utc(row.created_at),
                    token=claim.token,
                )
                for row in rows
                if row.deleted_at is None
            ]

        return await self._writes.run(record, locks=RowLocks.of(endpoints=endpoints))

    async def secret_of(self, delivery: DueDelivery) -> str | None:
        """The clear signing secret for ``delivery``'s attempt, opened now: sign with it and
        drop it. Catalogue errors if it does not open (persistence.webhook_secrets).

        None, nothing to sign, when the delivery is no longer this attempt's to send: its
        endpoint was deleted since the claim (the delete erases the secret and fails the
        delivery, clearing its claim, in one write) or its claim was taken over. Read here,
        just before signing, not from the claim's read: a delivery claimed before a DELETE
        answered is never signed after it, however long it waited for its turn."""
        d, e = webhook_deliveries, webhook_endpoints
        query = (
            select(e.c.secret_key_id, e.c.secret_ciphertext, e.c.secret)
            .join(d, d.c.endpoint_id == e.c.id)
            .where(d.c.id == delivery.id)
            .where(held_by(d, delivery.token))
            .where(e.c.deleted_at.is_(None))
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            return None
        stored = StoredSecret(row.secret_key_id, row.secret_ciphertext, row.secret)
        return await self.secrets.open(delivery.endpoint_id, stored)

    async def record_attempt(
        self,
        delivery: DueDelivery,
        *,
        delivered: bool,
        status_code: int | None,
        error: str | None,
        next_attempt_at: datetime | None,
    ) -> bool:
        """Record the outcome of the attempt ``delivery`` was claimed for, and release the
        claim: delivered, to be tried again at ``next_attempt_at``, or (None) failed for
        good. False, and nothing written, if the claim is no longer the caller's."""
        now = self._clock()
        if delivered:
            status = DELIVERY_DELIVERED
        elif next_attempt_at is not None:
            status = DELIVERY_PENDING
        else:
            status = DELIVERY_FAILED
        values: dict[str, Any] = {
            "status": status,
            "attempts": webhook_deliveries.c.attempts + 1,
            "next_attempt_at": None if delivered else next_attempt_at,
            "last_attempt_at": now,
            "last_status_code": status_code,
            "last_error": None if error is None else error[:_ERROR_MAX],
            "updated_at": now,
            **claim_columns(None),
        }

        async def record(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id == delivery.id)
                .where(held_by(webhook_deliveries, delivery.token))
                .values(**values)
            )
            return bool(result.rowcount)

        return await self._writes.run(record, locks=RowLocks.of(endpoints=[delivery.endpoint_id]))

    async def prune(self, finished_before: datetime) -> int:
        """Delete delivered and failed deliveries last changed before ``finished_before``;
        return how many. Pending ones are never pruned: they are still owed."""

        # Rows chosen by a query cannot be locked in the writers' order
        # (persistence.lock_order): one another transaction holds (a re-send making it
        # pending again) is left to the next pass rather than waited for. (An alias: a
        # subquery of the DELETE's own table would be correlated to it.)
        candidate = webhook_deliveries.alias("finished")
        finished = (
            select(candidate.c.id)
            .where(candidate.c.status != DELIVERY_PENDING)
            .where(candidate.c.updated_at < finished_before)
            .with_for_update(skip_locked=True)
        )

        async def record(conn: AsyncConnection) -> int:
            result = await conn.execute(
                delete(webhook_deliveries).where(webhook_deliveries.c.id.in_(finished))
            )
            return int(result.rowcount)

        return await self._writes.run(record)

    async def backlog(self) -> int:
        """Deliveries still to be made (pending)."""
        async with self._engine.connect() as conn:
            count = await conn.scalar(
                select(func.count())
                .select_from(webhook_deliveries)
                .where(webhook_deliveries.c.status == DELIVERY_PENDING)
            )
            return int(count or 0)


def _endpoint(row: Any) -> EndpointInfo:
    return EndpointInfo(
        id=row["id"],
        client_id=row["client_id"],
        url=row["url"],
        description=row["description"],
        enabled_events=list(row["enabled_events"]),
        created_at=as_utc(row["created_at"]),
    )


def _delivery(row: Any) -> DeliveryInfo:
    return DeliveryInfo(
        id=row["id"],
        endpoint_id=row["endpoint_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=as_utc_or_none(row["next_attempt_at"]),
        last_attempt_at=as_utc_or_none(row["last_attempt_at"]),
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        created_at=as_utc(row["created_at"]),
        updated_at=as_utc(row["updated_at"]),
    )
