"""What the tests of stray Stripe holds set up alike: a Stripe stand-in (the official SDK
against tests.support.stripe_lagging_search) that captures a held PaymentIntent just before
the sweep's void reaches it, a payment failed with its attempt closed as not charged while
a late call of that attempt's key leaves a hold at Stripe, and a pass of a release before
voids had a key of their own."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest

from consumer import stray_charges
from consumer.outcome import Outcome
from consumer.stray_charges import StraySweep
from domain.accounts import Account, AccountType
from domain.payments import CreatePayment
from persistence.payment_store import PaymentStore
from persistence.stray_store import StrayStore
from providers.errors import ProviderTimeoutError
from providers.registry import Providers
from providers.stripe import StripeProvider
from telemetry.metrics import Metrics
from tests.support.builders import create_payment
from tests.support.clock import Clock
from tests.support.stray_setup import charge_under, handler_giving_up_after_two_calls
from tests.support.stripe_lagging_search import LaggingStripe

# How long a failed payment's attempt settles before the sweep looks at its key.
SETTLE = timedelta(minutes=5)


class CapturedBeforeTheVoid(LaggingStripe):
    """Stripe captures the held PaymentIntent (from its Dashboard, or any capture call)
    just before the sweep's void reaches it: the void is refused for its state.
    ``after_next_read`` runs once right after Stripe answered the next read of ``read``
    (``charge``: a PaymentIntent, ``refunds``: the list of its Refunds), before that answer
    reaches its caller: another process acting in between."""

    after_next_read: Callable[[], Awaitable[object]] | None = None
    read = "charge"

    def _cancel(self, intent_id: str, key: str | None) -> tuple[int, dict[str, Any]]:
        intent = self.intents[intent_id]
        if intent["status"] == "requires_capture":
            intent.update(status="succeeded", amount_capturable=0, amount_received=intent["amount"])
        return super()._cancel(intent_id, key)

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        answer = await super().request_async(method, url, headers, post_data)
        path = urlsplit(url).path
        read = {
            "charge": path.startswith("/v1/payment_intents/") and not path.endswith("/search"),
            "refunds": path == "/v1/refunds",
        }[self.read]
        if self.after_next_read is not None and method == "get" and read:
            meanwhile, self.after_next_read = self.after_next_read, None
            await meanwhile()
        return answer


def card_payment() -> CreatePayment:
    """A payment by a saved Stripe card, asked to capture at once."""
    command = dataclasses.replace(
        create_payment(), payer=Account(AccountType.TOKEN, "pm_card_visa")
    )
    assert command.capture
    return command


async def a_stray_hold(
    store: PaymentStore, stripe_api: LaggingStripe, stripe_provider: StripeProvider, clock: Clock
) -> tuple[CreatePayment, str, dict[str, Any]]:
    """A payment failed after both its calls were refused before processing (its attempt
    closed as not charged), then a late call of its attempt's key, whose answer is lost,
    leaves a hold at Stripe: the payment's command, the attempt key and the PaymentIntent."""
    handler = handler_giving_up_after_two_calls(store, stripe_provider, clock)
    command = card_payment()
    stripe_api.refuse_next = 2
    assert await handler.handle(command) is Outcome.FAILED
    attempt_key = f"{command.payment_request_id}-a1"
    with pytest.raises(ProviderTimeoutError):
        await charge_under(stripe_provider, command, attempt_key)
    (intent,) = stripe_api.intents.values()
    return command, attempt_key, intent


async def an_older_release_pass(
    sweep: StraySweep,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    *,
    refunds_past_the_void: bool,
) -> None:
    """Once the attempt has settled, one pass of a release before voids had a key of their
    own: its void goes under the refund's key (``<attempt key>-reversal``). Without
    ``refunds_past_the_void`` the pass also leaves a refund Stripe refuses under that key
    unanswered, as such a release did."""

    async def older_release(self: StraySweep, candidate: Any, *_: Any) -> str:
        return "unanswered"

    monkeypatch.setattr(stray_charges, "void_key", lambda key: f"{key}-reversal")
    if not refunds_past_the_void:
        monkeypatch.setattr(StraySweep, "_refund_past_a_void", older_release)
    clock.now += SETTLE + timedelta(minutes=1)
    await sweep.run_once()
    monkeypatch.undo()


def a_sweep(
    strays: StrayStore, stripe_provider: StripeProvider, metrics: Metrics, clock: Clock
) -> StraySweep:
    """The stray-charge sweep over ``strays`` and Stripe alone."""
    return StraySweep(
        store=strays,
        providers=Providers.of(stripe_provider),
        metrics=metrics,
        settle_after=SETTLE,
        clock=clock,
    )


Hook = Callable[[], Awaitable[object]]


async def run_first_hook(hooks: list[tuple[tuple[str, str], Hook]], call: tuple[str, str]) -> None:
    """Run, and remove, the first of ``hooks`` whose (method, path prefix) matches ``call``:
    each hook of an interleaving test runs once, at the request it names."""
    for i, ((method, prefix), hook) in enumerate(hooks):
        if call[0] == method and call[1].startswith(prefix):
            del hooks[i]
            await hook()
            return
