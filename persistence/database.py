"""One database: its engine, its one writer queue, and the stores over them.

Every process opens its database here, in one line, and takes the stores it needs from it.
Owning the writer queue (persistence.group_commit) here is what makes it *one* queue: on
SQLite every write of a process must go through the same queue, or a second writer waits in
SQLite's busy handler instead; on PostgreSQL it is what lets concurrent handlers' writes
share transactions.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncEngine

from domain.clock import utc_now
from persistence.api_key_store import ApiKeyStore
from persistence.backlogs import Backlogs
from persistence.cancel_store import CancelStore
from persistence.capture_store import CaptureStore
from persistence.expiry_store import ExpiryStore
from persistence.group_commit import GroupCommit, WriteLockObserver
from persistence.migrate import create_schema
from persistence.outbox import Outbox
from persistence.payment_store import DEFAULT_CLAIM_LEASE, PaymentStore
from persistence.rate_limit_store import RateLimitStore
from persistence.refund_store import RefundStore
from persistence.stray_store import StrayStore
from persistence.webhook_store import WebhookStore


class Database:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], datetime] = utc_now,
        claim_lease: timedelta = DEFAULT_CLAIM_LEASE,
        writer_engine: AsyncEngine | None = None,
        lock_observer: WriteLockObserver | None = None,
    ) -> None:
        """``writer_engine``: the engine of the writer queue's transactions, when it is not
        ``engine`` (see persistence.engine.create_writer_engine); closed with it.
        ``lock_observer``: told how long each of the queue's transactions waited for and
        held its locks."""
        self.engine = engine
        self._writer_engine = writer_engine
        self.writes = GroupCommit(writer_engine or engine, lock_observer=lock_observer)
        self.payments = PaymentStore(engine, clock, claim_lease=claim_lease, writes=self.writes)
        self.refunds = RefundStore(engine, self.writes, clock, claim_lease=claim_lease)
        self.captures = CaptureStore(engine, self.writes, clock, claim_lease=claim_lease)
        self.cancels = CancelStore(engine, self.writes, clock, claim_lease=claim_lease)
        self.expiries = ExpiryStore(engine, self.writes, clock)
        self.outbox = Outbox(engine, self.writes, clock)
        self.strays = StrayStore(engine, self.writes, clock, claim_lease=claim_lease)
        self.api_keys = ApiKeyStore(engine, clock=clock)
        self.backlogs = Backlogs(engine)
        self.webhooks = WebhookStore(engine, self.writes, clock)
        self.rate_limits = RateLimitStore(self.writes)

    @classmethod
    async def open(
        cls,
        engine: AsyncEngine,
        *,
        clock: Callable[[], datetime] = utc_now,
        claim_lease: timedelta = DEFAULT_CLAIM_LEASE,
        writer_engine: AsyncEngine | None = None,
        lock_observer: WriteLockObserver | None = None,
    ) -> Database:
        """The database on ``engine``, its schema upgraded to the code's (see migrate)."""
        await create_schema(engine)
        return cls(
            engine,
            clock=clock,
            claim_lease=claim_lease,
            writer_engine=writer_engine,
            lock_observer=lock_observer,
        )

    async def close(self) -> None:
        """Safe to call twice."""
        await self.payments.close()
        await self.engine.dispose()
        if self._writer_engine is not None:
            await self._writer_engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
