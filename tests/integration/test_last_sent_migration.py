"""Revision 0020 (``provider_attempts.last_sent_at``) down and up on SQLite and PostgreSQL,
with an attempt in doubt whose key was re-sent: the downgrade keeps every attempt, open or
closed; the upgrade leaves every attempt's last send null, which reads as its creation (the
rule of the release before), and the next re-send stamps it again."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from domain.retry import RetryPolicy
from persistence.payment_store import PaymentStore
from persistence.tables import provider_attempts
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.attempt_migrations import attempt_columns, migrate, rows_of
from tests.support.builders import ACCOUNT_KEY, create_payment
from tests.support.clock import Clock
from tests.support.faulty_acquirer import Acquirer

pytestmark = pytest.mark.integration

ATTEMPT = (
    provider_attempts.c.attempt_key,
    provider_attempts.c.status,
    provider_attempts.c.finished_at,
)


async def test_0020_down_keeps_the_attempts_and_up_reads_their_last_send_as_creation(
    engine: AsyncEngine, store: PaymentStore, clock: Clock
) -> None:
    acquirer = Acquirer()
    handler = PaymentCommandHandler(
        store=store,
        providers=Providers.of(acquirer),
        router=Router({"*": [acquirer.name]}),
        events=PaymentEvents(PaymentMessages.bundled(), "payments.results"),
        account_key=ACCOUNT_KEY,
        metrics=Metrics(),
        retry_policy=RetryPolicy(max_attempts=1),
        clock=clock,
    )
    paid = create_payment()
    assert await handler.handle(paid) is Outcome.SUCCEEDED
    in_doubt = create_payment()
    key = f"{in_doubt.payment_request_id}-a1"
    acquirer.timeout_once.add(key)
    assert await handler.handle(in_doubt) is Outcome.PENDING
    began = clock.now
    clock.now += timedelta(minutes=5)
    claimed = await store.claim(in_doubt.payment_request_id)
    assert claimed is not None
    assert claimed.last_sent_at == claimed.started_at == began
    token = claimed.claim.token
    assert await store.renew_sending(in_doubt.payment_request_id, key, claim=token)
    await store.release(in_doubt.payment_request_id, token)
    claimed = await store.claim(in_doubt.payment_request_id)
    assert claimed is not None
    assert claimed.last_sent_at == began + timedelta(minutes=5)
    await store.release(in_doubt.payment_request_id, claimed.claim.token)
    before = sorted(await rows_of(engine, *ATTEMPT))
    assert len(before) == 2

    await migrate(engine, "downgrade", "0021")

    assert "last_sent_at" not in await attempt_columns(engine)
    assert sorted(await rows_of(engine, *ATTEMPT)) == before

    await migrate(engine, "upgrade", "0020")

    assert await rows_of(engine, provider_attempts.c.last_sent_at) == [(None,), (None,)]
    assert sorted(await rows_of(engine, *ATTEMPT)) == before
    # Null reads as "sent once, at creation", as the release before counted it.
    claimed = await store.claim(in_doubt.payment_request_id)
    assert claimed is not None
    assert claimed.last_sent_at == claimed.started_at == began
    # The next re-send is stamped again, under the claim only.
    clock.now += timedelta(minutes=5)
    assert await store.renew_sending(in_doubt.payment_request_id, key, claim=claimed.claim.token)
    assert not await store.renew_sending(in_doubt.payment_request_id, key, claim=token)
    assert await rows_of(engine, provider_attempts.c.last_sent_at) != [(None,), (None,)]
