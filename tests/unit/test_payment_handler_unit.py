"""The payment handler's decision table, against the fake store and a scripted provider.

Each case is one row of the tables in consumer/payment_handler.py (handle, resolve,
_charge): what the store answers, what the provider says, and what must follow -- the
provider calls (by key), the row and its attempts, the claim, the events, the metric.
The same behaviour on real databases is in tests/integration/test_payment_handler.py.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import cast

import pytest

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from domain.errors import ErrorCode, PaygateError
from domain.events import conflict_event_id, result_event_id
from domain.money import Money
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from persistence.attempts import (
    ATTEMPT_DECLINED,
    ATTEMPT_FAILED,
    ATTEMPT_SUCCEEDED,
    ATTEMPT_UNKNOWN,
)
from providers.errors import (
    ProviderRateLimitedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    UnsupportedOperationError,
)
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from tests.support.builders import create_payment
from tests.support.fake_stores import FakePaymentStore
from tests.support.scripted_provider import (
    ScriptedProvider,
    authorized,
    charged,
    declined,
)

pytestmark = pytest.mark.unit

ACCOUNT_KEY = b"unit-account-key"
MESSAGES = PaymentMessages.bundled()
EVENTS = PaymentEvents(MESSAGES, "payments.results")
# Three calls per payment, back-offs of a millisecond: the schedule is what is tested.
FAST = RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.001)


def unavailable() -> ProviderUnavailableError:
    return ProviderUnavailableError("scripted", "503 before processing")


def timeout() -> ProviderTimeoutError:
    return ProviderTimeoutError("scripted", "no answer in time")


class WorkerStopped(Exception):
    """A worker stopped mid-work (a drain, a shutdown, an error)."""


@pytest.fixture
def store(db):
    return FakePaymentStore(db)


def handler_for(store, *providers, metrics, clock, **options):
    return PaymentCommandHandler(
        store=store,
        providers=Providers.of(*providers),
        router=Router({"*": [p.name for p in providers]}),
        events=EVENTS,
        account_key=ACCOUNT_KEY,
        metrics=metrics,
        retry_policy=options.pop("retry_policy", FAST),
        clock=clock,
        **options,
    )


@pytest.fixture
def handler(store, provider, metrics, clock):
    return handler_for(store, provider, metrics=metrics, clock=clock)


def events(store):
    return [MESSAGES.decode_result(message.payload) for message in store.outbox]


def consumed(metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "paygate_commands_consumed_total", {"kind": "payment", "outcome": outcome}
    )
    return value or 0.0


def first_key(command) -> str:
    return f"{command.payment_request_id}-a1"


async def timed_out(handler, provider, command):
    """The payment as a worker left it whose call timed out: pending, its attempt open."""
    provider.script("charge", timeout())
    assert await handler.handle(command) is Outcome.PENDING
    provider.calls.clear()


# -- a new payment -----------------------------------------------------------------------------


async def test_a_new_payment_is_written_ahead_claimed_then_charged_once(
    handler, store, provider, metrics
):
    command = create_payment()
    pid = command.payment_request_id
    seen = []

    def while_charging(request):
        row = store.row(pid)
        seen.append((row.view.status, row.open_attempt.attempt_key, row.claim.token is not None))
        return charged("ch_1")

    provider.script("charge", while_charging)

    assert await handler.handle(command) is Outcome.SUCCEEDED

    assert seen == [(PaymentStatus.PROCESSING, first_key(command), True)]
    assert provider.called("charge") == [first_key(command)]
    row = store.row(pid)
    assert (row.view.status, row.view.provider_reference) == (PaymentStatus.SUCCEEDED, "ch_1")
    assert row.claim.token is None
    (attempt,) = row.attempts
    assert (attempt.status, attempt.sealed_request) == (ATTEMPT_SUCCEEDED, None)
    assert attempt.finished_at is not None
    (event,) = events(store)
    assert event.event_id == result_event_id(pid, PaymentStatus.SUCCEEDED)
    assert (event.status, event.provider, event.amount) == (
        PaymentStatus.SUCCEEDED,
        "scripted",
        command.amount,
    )
    assert consumed(metrics, "succeeded") == 1


async def test_a_payment_to_authorize_only_is_held_not_captured(handler, store, provider):
    command = dataclasses.replace(create_payment(), capture=False)
    provider.script("charge", authorized("ch_held"))

    assert await handler.handle(command) is Outcome.AUTHORIZED

    (request,) = provider.requests
    assert request.capture is False
    assert store.row(command.payment_request_id).view.status is PaymentStatus.AUTHORIZED
    assert [e.status for e in events(store)] == [PaymentStatus.AUTHORIZED]


@pytest.mark.parametrize(
    ("answer", "outcome", "status", "attempt_status", "code"),
    [
        (
            declined(error=PaygateError(ErrorCode.INSUFFICIENT_FUNDS, "no money")),
            Outcome.FAILED,
            PaymentStatus.FAILED,
            ATTEMPT_DECLINED,
            ErrorCode.INSUFFICIENT_FUNDS,
        ),
        (
            declined(error=None),
            Outcome.FAILED,
            PaymentStatus.FAILED,
            ATTEMPT_DECLINED,
            ErrorCode.PAYMENT_DECLINED,
        ),
        (
            PaygateError(ErrorCode.PAYMENT_DECLINED, "refused by the adapter"),
            Outcome.FAILED,
            PaymentStatus.FAILED,
            ATTEMPT_FAILED,
            ErrorCode.PAYMENT_DECLINED,
        ),
        (
            UnsupportedOperationError("scripted", "no such method"),
            Outcome.FAILED,
            PaymentStatus.FAILED,
            ATTEMPT_FAILED,
            ErrorCode.INTERNAL_ERROR,
        ),
        (
            timeout(),
            Outcome.PENDING,
            PaymentStatus.PENDING,
            ATTEMPT_UNKNOWN,
            ErrorCode.PROVIDER_TIMEOUT,
        ),
    ],
    ids=["declined", "declined-without-error", "paygate-error", "not-retriable", "timeout"],
)
async def test_what_the_provider_says_to_a_new_payment_is_recorded_with_its_event(
    handler, store, provider, answer, outcome, status, attempt_status, code
):
    command = create_payment()
    provider.script("charge", answer)

    assert await handler.handle(command) is outcome

    assert provider.called("charge") == [first_key(command)]  # never retried
    row = store.row(command.payment_request_id)
    assert (row.view.status, row.view.error.code) == (status, code)
    assert row.attempts[0].status == attempt_status
    assert row.claim.token is None
    (event,) = events(store)
    assert (event.status, event.error.code) == (status, code)


async def test_a_timed_out_attempt_stays_open_with_its_sealed_command(handler, store, provider):
    command = create_payment()
    await timed_out(handler, provider, command)

    (attempt,) = store.row(command.payment_request_id).attempts
    assert attempt.finished_at is None  # in doubt: only the provider can close it
    assert attempt.sealed_request is not None  # so whoever owns it next can re-send it


# -- retries and failover ----------------------------------------------------------------------


async def test_a_refusal_that_certainly_did_not_charge_is_retried_with_the_same_key(
    handler, store, provider, metrics
):
    command = create_payment()
    provider.script("charge", unavailable(), charged())

    assert await handler.handle(command) is Outcome.SUCCEEDED

    assert provider.called("charge") == [first_key(command)] * 2
    assert store.called("schedule_retry") == [command.payment_request_id]
    assert store.row(command.payment_request_id).view.next_retry_at is None
    assert (
        metrics.registry.get_sample_value(
            "paygate_provider_retries_total", {"provider": "scripted"}
        )
        == 1
    )


async def test_the_retry_schedule_is_written_before_the_wait_and_keeps_to_retry_after(
    handler, store, provider, clock
):
    command = create_payment()
    pid = command.payment_request_id
    provider.script("charge", ProviderRateLimitedError("scripted", "slow down", 0.002), charged())
    scheduled = []
    store.before("renew", lambda: scheduled.append(store.row(pid).view.next_retry_at))

    assert await handler.handle(command) is Outcome.SUCCEEDED

    # The clock stands still, so the schedule is exactly now + the provider's wait.
    assert scheduled == [clock.now + timedelta(seconds=0.002)]


async def test_retries_used_up_fail_a_first_time_payment(handler, store, provider, metrics):
    command = create_payment()
    provider.script("charge", unavailable(), unavailable(), unavailable())

    assert await handler.handle(command) is Outcome.FAILED

    assert provider.called("charge") == [first_key(command)] * 3
    row = store.row(command.payment_request_id)
    assert row.view.error.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert row.attempts[0].status == ATTEMPT_FAILED
    assert consumed(metrics, "failed") == 1


async def test_a_refusal_that_certainly_did_not_charge_fails_over_under_a_new_key(
    store, metrics, clock
):
    primary, secondary = ScriptedProvider("primary"), ScriptedProvider("secondary")
    handler = handler_for(store, primary, secondary, metrics=metrics, clock=clock)
    command = create_payment()
    pid = command.payment_request_id
    primary.script("charge", unavailable())
    secondary.script("charge", charged("ch_2"))

    assert await handler.handle(command) is Outcome.SUCCEEDED

    assert primary.called("charge") == [f"{pid}-a1"]
    assert secondary.called("charge") == [f"{pid}-a2"]
    row = store.row(pid)
    assert [(a.provider, a.status) for a in row.attempts] == [
        ("primary", ATTEMPT_FAILED),
        ("secondary", ATTEMPT_SUCCEEDED),
    ]
    assert row.view.provider == "secondary"
    assert [e.provider for e in events(store)] == ["secondary"]
    assert (
        metrics.registry.get_sample_value(
            "paygate_provider_failovers_total", {"from": "primary", "to": "secondary"}
        )
        == 1
    )


async def test_a_timeout_never_fails_over(store, metrics, clock):
    primary, secondary = ScriptedProvider("primary"), ScriptedProvider("secondary")
    handler = handler_for(store, primary, secondary, metrics=metrics, clock=clock)
    command = create_payment()
    primary.script("charge", timeout())

    assert await handler.handle(command) is Outcome.PENDING

    assert secondary.calls == []  # it may have charged at the primary
    assert [a.provider for a in store.row(command.payment_request_id).attempts] == ["primary"]


# -- the same payment again ----------------------------------------------------------------------


async def test_a_redelivered_final_payment_replays_its_event_without_a_call(
    handler, store, provider, metrics
):
    command = create_payment()
    provider.script("charge", charged())
    await handler.handle(command)

    assert await handler.handle(command) is Outcome.REPLAYED

    assert provider.called("charge") == [first_key(command)]
    first, again = events(store)
    assert again == first  # the same event, under the same id: readers drop the duplicate
    assert consumed(metrics, "replayed") == 1


async def test_a_key_reused_with_other_parameters_is_a_conflict_that_changes_nothing(
    handler, store, provider, metrics
):
    command = create_payment()
    provider.script("charge", charged())
    await handler.handle(command)
    other = dataclasses.replace(command, amount=Money(9_999, "EUR"))

    assert await handler.handle(other) is Outcome.CONFLICT

    pid = command.payment_request_id
    assert provider.called("charge") == [first_key(command)]
    assert store.row(pid).view.amount == command.amount
    conflict = events(store)[-1]
    assert conflict.event_id == conflict_event_id(pid, other.parameters_fingerprint(ACCOUNT_KEY))
    # Its own id, not the payment's failed event's: docs/kafka.md tells readers how to
    # tell a refusal of the second command from news of the payment.
    assert conflict.event_id != result_event_id(pid, PaymentStatus.FAILED)
    assert (conflict.status, conflict.error.code, conflict.amount) == (
        PaymentStatus.FAILED,
        ErrorCode.IDEMPOTENCY_CONFLICT,
        other.amount,
    )
    # The event says so itself (PaymentResult v4), and the payment's own events do not.
    assert conflict.refusal is True
    assert not any(event.refusal for event in events(store)[:-1])
    assert consumed(metrics, "conflict") == 1


@pytest.mark.parametrize(
    ("first_answer", "code"),
    [
        (charged(), ErrorCode.ORDER_ALREADY_PAID),
        (declined(), ErrorCode.NEW_ATTEMPT_REQUIRED),
    ],
    ids=["order-paid", "new-attempt-required"],
)
async def test_order_protection_refuses_a_second_payment_of_an_order_without_a_call(
    handler, store, provider, metrics, first_answer, code
):
    first = create_payment()
    provider.script("charge", first_answer)
    await handler.handle(first)
    second = create_payment(order_id=first.order_id)

    assert await handler.handle(second) is Outcome.REFUSED

    assert provider.called("charge") == [first_key(first)]
    refused = store.row(second.payment_request_id).view
    assert (refused.status, refused.error.code) == (PaymentStatus.FAILED, code)
    assert events(store)[-1].error.code is code
    assert consumed(metrics, "refused") == 1


# -- an in-doubt payment: a redelivery resolves it by asking the provider -----------------------


@pytest.mark.parametrize(
    ("status_answer", "charges", "outcome", "status"),
    [
        (charged("ch_late"), [], Outcome.SUCCEEDED, PaymentStatus.SUCCEEDED),
        (declined(), [], Outcome.FAILED, PaymentStatus.FAILED),
        # No record of the key: it never arrived, so sending it again cannot charge twice.
        (None, [charged("ch_resent")], Outcome.SUCCEEDED, PaymentStatus.SUCCEEDED),
        # The provider cannot tell now: never guess, leave it for a later pass.
        (unavailable(), [], Outcome.PENDING, PaymentStatus.PENDING),
    ],
    ids=["provider-says-charged", "provider-says-declined", "unknown-key-resent", "error"],
)
async def test_a_redelivered_in_doubt_payment_follows_the_providers_answer(
    handler, store, provider, status_answer, charges, outcome, status
):
    command = create_payment()
    await timed_out(handler, provider, command)
    provider.script("charge_status", status_answer)
    provider.script("charge", *charges)

    assert await handler.handle(command) is outcome

    assert provider.called("charge_status") == [first_key(command)]
    assert provider.called("charge") == [first_key(command)] * len(charges)
    row = store.row(command.payment_request_id)
    assert row.view.status is status
    assert len(row.attempts) == 1  # the same key throughout
    assert row.claim.token is None  # settled, or given back for the next pass


async def test_an_in_doubt_attempt_is_only_asked_of_its_own_provider(store, metrics, clock):
    sandbox = ScriptedProvider("sandbox")
    command = create_payment()
    await timed_out(handler_for(store, sandbox, metrics=metrics, clock=clock), sandbox, command)
    # The attempt's provider is no longer configured after a restart.
    other = ScriptedProvider("other")
    handler = handler_for(store, other, metrics=metrics, clock=clock)

    assert await handler.handle(command) is Outcome.PENDING

    assert other.calls == []
    assert store.row(command.payment_request_id).claim.token is None


async def test_retries_used_up_leave_an_in_doubt_payment_pending_never_failed(
    handler, store, provider
):
    command = create_payment()
    provider.script("charge", WorkerStopped())  # its first owner stopped mid-call
    with pytest.raises(WorkerStopped):
        await handler.handle(command)
    provider.script("charge_status", None)
    provider.script("charge", unavailable(), unavailable(), unavailable())

    # That first call may still arrive: refusals of the re-sends prove nothing.
    assert await handler.handle(command) is Outcome.PENDING

    row = store.row(command.payment_request_id)
    assert (row.view.status, row.view.error.code) == (
        PaymentStatus.PENDING,
        ErrorCode.PROVIDER_UNAVAILABLE,
    )
    (attempt,) = row.attempts
    assert (attempt.status, attempt.finished_at) == (ATTEMPT_UNKNOWN, None)
    assert row.claim.token is None
    assert [e.status for e in events(store)] == [PaymentStatus.PENDING]


async def test_an_in_doubt_attempt_is_resent_under_its_own_key_never_failed_over(
    store, metrics, clock
):
    primary, secondary = ScriptedProvider("primary"), ScriptedProvider("secondary")
    handler = handler_for(store, primary, secondary, metrics=metrics, clock=clock)
    command = create_payment()
    await timed_out(handler, primary, command)
    primary.script("charge_status", None)
    primary.script("charge", unavailable(), unavailable(), charged())

    assert await handler.handle(command) is Outcome.SUCCEEDED

    # Its first call may still land at the primary: a second key elsewhere could charge twice.
    assert primary.called("charge") == [first_key(command)] * 3
    assert secondary.calls == []
    assert len(store.row(command.payment_request_id).attempts) == 1
    # Refused once, failover is over: later refusals go straight to the back-off.
    assert store.called("next_attempt") == [command.payment_request_id]


# -- one owner per payment ---------------------------------------------------------------------


async def test_a_duplicate_while_the_owner_waits_on_the_provider_leaves_it_alone(
    handler, store, provider, metrics
):
    command = create_payment()
    duplicate = []

    async def duplicate_arrives(request):
        duplicate.append(await handler.handle(command))
        return charged()

    provider.script("charge", duplicate_arrives)

    assert await handler.handle(command) is Outcome.SUCCEEDED

    assert duplicate == [Outcome.OWNED_ELSEWHERE]
    assert provider.called("charge") == [first_key(command)]
    assert provider.called("charge_status") == []
    assert consumed(metrics, "owned_elsewhere") == 1


async def test_a_redelivery_of_a_payment_another_worker_holds_changes_nothing(
    handler, store, provider
):
    command = create_payment()
    await timed_out(handler, provider, command)
    holder = store.take_over(command.payment_request_id)
    outbox_before = len(store.outbox)

    assert await handler.handle(command) is Outcome.OWNED_ELSEWHERE

    assert provider.calls == []
    row = store.row(command.payment_request_id)
    assert (row.view.status, row.claim.token) == (PaymentStatus.PENDING, holder)
    assert len(store.outbox) == outbox_before


async def test_a_duplicate_that_finds_the_payment_finished_by_its_owner_replays_it(
    handler, store, provider
):
    command = create_payment()
    pid = command.payment_request_id
    await timed_out(handler, provider, command)
    holder = store.take_over(pid)
    finished_event = EVENTS.of_payment(dataclasses.replace(store.row(pid).view))

    async def owner_finishes():
        assert await store.finish(
            pid,
            first_key(command),
            claim=holder,
            status=PaymentStatus.SUCCEEDED,
            attempt_status=ATTEMPT_SUCCEEDED,
            provider_reference="ch_owner",
            error=None,
            event=finished_event,
        )

    store.before("claim", owner_finishes)

    assert await handler.handle(command) is Outcome.REPLAYED

    assert provider.calls == []
    replayed = events(store)[-1]
    assert (replayed.status, replayed.provider_reference) == (PaymentStatus.SUCCEEDED, "ch_owner")


async def test_a_claim_lost_during_the_back_off_stops_the_worker_recording_nothing(
    handler, store, provider
):
    command = create_payment()
    pid = command.payment_request_id
    provider.script("charge", unavailable())
    store.before("renew", lambda: store.take_over(pid))
    outbox_before = len(store.outbox)

    # The former owner records nothing; the command is counted as a replay (refunds and
    # captures count the same case as owned_elsewhere).
    assert await handler.handle(command) is Outcome.REPLAYED

    assert provider.called("charge") == [first_key(command)]  # never sent again
    row = store.row(pid)
    assert row.view.status is PaymentStatus.PROCESSING
    assert row.attempts[0].finished_at is None
    assert len(store.outbox) == outbox_before


async def test_a_worker_stopped_mid_call_gives_the_claim_up_for_the_next_owner(
    handler, store, provider
):
    command = create_payment()
    pid = command.payment_request_id
    provider.script("charge", WorkerStopped())

    with pytest.raises(WorkerStopped):
        await handler.handle(command)

    row = store.row(pid)
    assert (row.view.status, row.claim.token) == (PaymentStatus.PROCESSING, None)
    # The next owner takes it at once, asks about the key, and re-sends that same key.
    provider.script("charge_status", None)
    provider.script("charge", charged())
    assert await handler.handle(command) is Outcome.SUCCEEDED
    assert provider.called("charge") == [first_key(command)] * 2


async def test_the_next_owner_keeps_to_a_scheduled_back_off_and_stops_if_it_loses_the_claim(
    handler, store, provider
):
    command = create_payment()
    pid = command.payment_request_id
    provider.script("charge", unavailable())

    def stop():
        raise WorkerStopped

    store.before("renew", stop)  # the first owner stops during its back-off
    with pytest.raises(WorkerStopped):
        await handler.handle(command)
    assert store.row(pid).view.next_retry_at is not None
    provider.script("charge_status", None)
    store.before("renew", lambda: store.take_over(pid))  # ... and the next one loses it

    assert await handler.handle(command) is Outcome.OWNED_ELSEWHERE

    assert provider.called("charge") == [first_key(command)]
    assert store.called("renew") == [pid, pid]


# -- vaulted accounts: revealed just in time, for the provider call only -----------------------


async def _vaulted_command(vault):
    from consumer.account_intake import AccountIntake
    from tests.support.intake import admit_and_write
    from vault.account_key_pair import AccountKeyPair

    intake = AccountIntake(
        vault, cast(AccountKeyPair, None), accept_clear=True, retention=timedelta(days=1)
    )
    return await admit_and_write(intake, create_payment())


async def test_the_provider_gets_the_number_from_the_vault_and_nothing_else_holds_it(
    store, provider, metrics, clock
):
    from tests.support.builders import SUCCESS_CARD
    from tests.support.memory_vault import memory_vault

    vault = memory_vault(ACCOUNT_KEY)
    handler = handler_for(store, provider, metrics=metrics, clock=clock, vault=vault)
    command = await _vaulted_command(vault)
    provider.script("charge", timeout())
    assert await handler.handle(command) is Outcome.PENDING
    [request] = provider.requests
    assert request.payer.number == SUCCESS_CARD
    row = store.row(command.payment_request_id)
    assert SUCCESS_CARD.encode() not in row.open_attempt.sealed_request
    assert SUCCESS_CARD not in repr(row)
    for message in store.outbox:
        assert SUCCESS_CARD.encode() not in message.payload


async def test_a_token_deleted_before_the_call_fails_the_payment_without_a_call(
    store, provider, metrics, clock
):
    from tests.support.memory_vault import memory_vault

    vault = memory_vault(ACCOUNT_KEY)
    handler = handler_for(store, provider, metrics=metrics, clock=clock, vault=vault)
    command = await _vaulted_command(vault)
    await vault.delete(command.payer.token, client_id=None)
    assert await handler.handle(command) is Outcome.FAILED
    assert provider.requests == []
    (event,) = events(store)
    assert (event.status, event.error.code) == (
        PaymentStatus.FAILED,
        ErrorCode.PAYMENT_METHOD_NOT_FOUND,
    )


async def test_the_intakes_rows_are_written_by_the_begin_before_the_provider_call(
    store, provider, metrics, clock
):
    from consumer.account_intake import AccountIntake, AdmittedPayments
    from domain.vaulted import VaultedAccount
    from tests.support.builders import PAYEE_IBAN, SUCCESS_CARD
    from tests.support.fake_vault_rows import FakeVaultRows
    from tests.support.memory_vault import memory_vault
    from vault.account_key_pair import AccountKeyPair

    rows = FakeVaultRows()
    vault = memory_vault(ACCOUNT_KEY, rows)
    handler = handler_for(store, provider, metrics=metrics, clock=clock, vault=vault)
    intake = AccountIntake(
        vault, cast(AccountKeyPair, None), accept_clear=True, retention=timedelta(days=1)
    )
    admitted, along = await intake.admit_along(create_payment())
    # Not stored yet: the rows are the begin's to write.
    assert len(along) == 2
    assert isinstance(admitted.payer, VaultedAccount)
    assert isinstance(admitted.payee, VaultedAccount)
    assert admitted.payer.token not in rows.entries
    provider.script("charge", timeout())
    assert await handler.handle(admitted, along) is Outcome.PENDING
    assert {admitted.payer.token, admitted.payee.token} <= set(rows.entries)
    [request] = provider.requests
    assert (request.payer.number, request.payee.number) == (SUCCESS_CARD, PAYEE_IBAN)
    # The dispatcher's path does the same: admitted, begun, charged with the numbers.
    other = create_payment()
    provider.script("charge", timeout())
    assert await AdmittedPayments(intake, handler).handle(other) is Outcome.PENDING
    assert provider.requests[-1].payer.number == SUCCESS_CARD
