"""What the stray-charge sweep's integration tests set up alike: a payment handler that
gives up after two calls (so a payment fails with its attempt closed as not charged, a
sweep candidate once settled), a charge made at the provider by hand under an attempt key
(as a late or a buggy call would), and the keys every pass reads."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from domain.accounts import Account
from domain.payments import CreatePayment
from domain.retry import RetryPolicy
from persistence.payment_store import PaymentStore
from persistence.tables import provider_attempts
from providers.port import ChargeOutcome, ChargeRequest, PaymentProvider
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import ACCOUNT_KEY
from tests.support.clock import Clock


def handler_giving_up_after_two_calls(
    store: PaymentStore, provider: PaymentProvider, clock: Clock
) -> PaymentCommandHandler:
    """A handler over ``provider`` alone whose retries end after two calls, without delay
    worth waiting for: a payment the provider refuses runs to ``failed``."""
    return PaymentCommandHandler(
        store=store,
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=PaymentEvents(PaymentMessages.bundled(), "payments.results"),
        account_key=ACCOUNT_KEY,
        metrics=Metrics(),
        retry_policy=RetryPolicy(max_attempts=2, base_delay_s=0.001, max_delay_s=0.001),
        clock=clock,
    )


async def charge_under(
    provider: PaymentProvider,
    command: CreatePayment,
    attempt_key: str,
    *,
    capture: bool = True,
    payment_request_id: str | None = None,
) -> ChargeOutcome:
    """The provider charges ``attempt_key`` with ``command``'s amount and accounts (the
    sandbox decides by card: a late charge needs a command with a charging one). Its
    accounts must be in the clear, as a provider gets them. ``payment_request_id``, if
    given, stands for the command's own (a charge for another payment than the command's)."""
    assert isinstance(command.payer, Account)
    assert isinstance(command.payee, Account)
    return await provider.charge(
        ChargeRequest(
            attempt_key=attempt_key,
            payment_request_id=payment_request_id or command.payment_request_id,
            amount=command.amount,
            payment_method=command.payment_method,
            payer=command.payer,
            payee=command.payee,
            capture=capture,
        )
    )


async def unverified_keys(engine: AsyncEngine) -> list[str]:
    """The attempt keys every pass reads (ix_provider_attempts_unverified), sorted."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(provider_attempts.c.attempt_key).where(provider_attempts.c.verified_at.is_(None))
        )
        return sorted(row.attempt_key for row in rows)
