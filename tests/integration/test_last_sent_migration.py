"""Revision 0020 (``provider_attempts.last_sent_at``) down and up on SQLite and PostgreSQL,
with an attempt in doubt whose key was re-sent: the downgrade keeps every attempt, open or
closed; the upgrade leaves every attempt's last send null, which reads as its creation (the
rule of the release before), and the next re-send stamps it again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from domain.retry import RetryPolicy
from persistence.engine import as_utc
from persistence.migrate import head_revision
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


async def _unstamped(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(provider_attempts).values(last_sent_at=None))


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
    # The stores read the newest schema (0027 adds a payments column); 0024 on the way
    # stamps the open attempt, which is taken back to 0020's null to read it as this code.
    await migrate(engine, "upgrade", head_revision())
    await _unstamped(engine)
    # Null reads as "sent once, at creation", as the release before counted it.
    claimed = await store.claim(in_doubt.payment_request_id)
    assert claimed is not None
    assert claimed.last_sent_at == claimed.started_at == began
    # The next re-send is stamped again, under the claim only.
    clock.now += timedelta(minutes=5)
    assert await store.renew_sending(in_doubt.payment_request_id, key, claim=claimed.claim.token)
    assert not await store.renew_sending(in_doubt.payment_request_id, key, claim=token)
    assert await rows_of(engine, provider_attempts.c.last_sent_at) != [(None,), (None,)]


async def test_0024_stamps_open_attempts_without_a_last_send_with_the_upgrade_time(
    engine: AsyncEngine, store: PaymentStore, clock: Clock
) -> None:
    """An attempt the previous release re-sent has no stamp; the upgrade's time is the only
    bound known for its last send, and a later bound only makes the abandon rule wait."""
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
    clock.now = datetime.now(UTC) - timedelta(hours=3)  # the attempts began 3 h ago
    paid = create_payment()
    assert await handler.handle(paid) is Outcome.SUCCEEDED
    in_doubt = create_payment()
    acquirer.timeout_once.add(f"{in_doubt.payment_request_id}-a1")
    assert await handler.handle(in_doubt) is Outcome.PENDING
    restamped = create_payment()
    restamped_key = f"{restamped.payment_request_id}-a1"
    acquirer.timeout_once.add(restamped_key)
    assert await handler.handle(restamped) is Outcome.PENDING
    claimed = await store.claim(restamped.payment_request_id)
    assert claimed is not None
    clock.now += timedelta(minutes=10)
    assert await store.renew_sending(
        restamped.payment_request_id, restamped_key, claim=claimed.claim.token
    )
    await store.release(restamped.payment_request_id, claimed.claim.token)
    stamped_by_the_release = clock.now

    # The previous release's rows: 0020 had them null (its re-sends left no stamp).
    await migrate(engine, "downgrade", "0021")
    await migrate(engine, "upgrade", "0020")
    assert await rows_of(engine, provider_attempts.c.last_sent_at) == [(None,)] * 3

    # ...but a row stamped at 0020 keeps its stamp: shown by stamping it again first, as
    # the store's re-send writes it (the stores read the newest schema, not 0020's).
    async with engine.begin() as conn:
        await conn.execute(
            update(provider_attempts)
            .where(provider_attempts.c.attempt_key == restamped_key)
            .values(last_sent_at=stamped_by_the_release)
        )

    before = datetime.now(UTC)
    await migrate(engine, "upgrade", "0024")
    after = datetime.now(UTC)
    await migrate(engine, "upgrade", head_revision())

    open_attempt = await store.claim(in_doubt.payment_request_id)
    assert open_attempt is not None
    assert before <= open_attempt.last_sent_at <= after
    assert open_attempt.started_at == clock.now - timedelta(minutes=10)
    kept = await store.claim(restamped.payment_request_id)
    assert kept is not None
    assert kept.last_sent_at == stamped_by_the_release
    finished = await rows_of(
        engine, provider_attempts.c.last_sent_at, provider_attempts.c.finished_at
    )
    assert [sent for sent, done in finished if done is not None] == [None]

    await migrate(engine, "downgrade", "0020")  # changes nothing
    assert len(await rows_of(engine, provider_attempts.c.attempt_key)) == 3


async def test_0024_never_stamps_a_last_send_before_the_attempts_creation(
    engine: AsyncEngine, store: PaymentStore, clock: Clock
) -> None:
    """The upgrade runs on a host of its own: with its clock behind the consumer's that
    made the attempt, the upgrade's time can precede the attempt's creation, and the abandon
    rule, which counts from the last send, would count the provider's silence from before
    the key was ever sent: earlier than 0020's reading (the creation), not later."""
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
    clock.now = datetime.now(UTC) + timedelta(minutes=5)  # the consumer's clock is ahead
    in_doubt = create_payment()
    acquirer.timeout_once.add(f"{in_doubt.payment_request_id}-a1")
    assert await handler.handle(in_doubt) is Outcome.PENDING

    await migrate(engine, "downgrade", "0021")
    await migrate(engine, "upgrade", "0020")
    await migrate(engine, "upgrade", "0024")
    await migrate(engine, "upgrade", head_revision())  # the stores read the newest schema

    claimed = await store.claim(in_doubt.payment_request_id)
    assert claimed is not None
    assert claimed.last_sent_at >= claimed.started_at


async def test_a_resend_stamped_by_a_clock_behind_the_attempt_counts_from_its_creation(
    engine: AsyncEngine, store: PaymentStore, clock: Clock
) -> None:
    """Two consumer hosts, the second's clock 10 min behind the first's: its re-send stamp
    precedes the attempt's creation, and the claim reads the creation instead, so the
    provider's silence is never counted from before the key was first sent."""
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
    in_doubt = create_payment()
    key = f"{in_doubt.payment_request_id}-a1"
    acquirer.timeout_once.add(key)
    assert await handler.handle(in_doubt) is Outcome.PENDING
    began = clock.now
    clock.now -= timedelta(minutes=10)  # the host that takes it over is behind
    claimed = await store.claim(in_doubt.payment_request_id)
    assert claimed is not None
    assert await store.renew_sending(in_doubt.payment_request_id, key, claim=claimed.claim.token)
    await store.release(in_doubt.payment_request_id, claimed.claim.token)
    stamps = await rows_of(engine, provider_attempts.c.last_sent_at)
    assert [as_utc(stamp) for (stamp,) in stamps] == [began - timedelta(minutes=10)]

    claimed = await store.claim(in_doubt.payment_request_id)
    assert claimed is not None
    assert claimed.last_sent_at == began
