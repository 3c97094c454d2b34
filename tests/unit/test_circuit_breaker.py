"""The circuit breaker's every transition, with a scripted provider and a hand-moved clock."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from domain.accounts import Account, AccountType
from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.payments import PaymentMethod
from paygate.providers import CircuitMetrics, build_providers
from paygate.settings import Settings
from providers.circuit_breaker import CircuitBreakerProvider, CircuitOpenError, CircuitState
from providers.errors import (
    ProviderError,
    ProviderRateLimitedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    UnsupportedOperationError,
)
from providers.port import (
    CancelRequest,
    CaptureRequest,
    ChargeOutcome,
    ChargeRequest,
    ChargeStatus,
    ProviderRefundStatus,
    RefundOutcome,
    RefundRequest,
)
from telemetry.metrics import Metrics
from tests.support.builders import PAYEE_IBAN, SUCCESS_CARD

pytestmark = pytest.mark.unit

THRESHOLD = 3
OPEN_S = 10.0
OK = ChargeOutcome(ChargeStatus.SUCCEEDED, "ch_1")

Step = ChargeOutcome | BaseException | asyncio.Event


class ScriptedProvider:
    """Answers each call with the next step of ``script``: an outcome, an exception to
    raise, or an event to wait for (then succeeds; ``waiting`` is set meanwhile). Counts
    the calls that reached it."""

    # Keys honoured for ever, unless a test sets a window.
    idempotency_window: timedelta | None = None
    # Its status answers show a charge at once, unless a test sets a lag.
    status_search_lag: timedelta = timedelta(0)
    refund_status_lag: timedelta = timedelta(0)

    def __init__(self, *script: Step) -> None:
        self.script: deque[Step] = deque(script)
        self.waiting = asyncio.Event()
        self.calls = 0
        self.status_queries = 0
        self.status_error: ProviderError | None = None

    @property
    def name(self) -> str:
        return "acme"

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def _next(self) -> ChargeOutcome:
        self.calls += 1
        step = self.script.popleft() if self.script else OK
        if isinstance(step, asyncio.Event):
            self.waiting.set()
            await step.wait()
            return OK
        if isinstance(step, BaseException):
            raise step
        return step

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        return await self._next()

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        return await self._next()

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        return await self._next()

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        await self._next()
        return RefundOutcome(ProviderRefundStatus.SUCCEEDED, "re_1")

    async def _status(self) -> ChargeOutcome | None:
        self.status_queries += 1
        if self.status_error is not None:
            raise self.status_error
        return OK

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        return await self._status()

    async def close_charge(self, attempt_key: str) -> ChargeOutcome | None:
        raise UnsupportedOperationError(self.name, "no payer actions in this double")

    async def charge_by_reference(self, provider_reference: str) -> ChargeOutcome | None:
        return await self._status()

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
        await self._status()
        return None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refused() -> ProviderUnavailableError:
    return ProviderUnavailableError("acme", "could not connect (ClientConnectorError)")


def timed_out() -> ProviderTimeoutError:
    return ProviderTimeoutError("acme", "no answer in time; outcome unknown")


REQUEST = ChargeRequest(
    attempt_key="pay-1-1",
    payment_request_id="pay-1",
    amount=Money(1000, "EUR"),
    payment_method=PaymentMethod.CARD,
    payer=Account(AccountType.CARD, SUCCESS_CARD),
    payee=Account(AccountType.IBAN, PAYEE_IBAN),
)


def breaker(
    provider: ScriptedProvider, clock: FakeClock, metrics: Metrics | None = None
) -> CircuitBreakerProvider:
    return CircuitBreakerProvider(
        provider,
        failure_threshold=THRESHOLD,
        open_s=OPEN_S,
        clock=clock,
        observer=None if metrics is None else CircuitMetrics(metrics),
    )


async def outcome_of(call: Callable[[], Awaitable[object]]) -> object:
    """The call's result, or the exception it raised (an assertion target either way)."""
    try:
        return await call()
    except (ProviderError, PaygateError) as exc:
        return exc


def state(guarded: CircuitBreakerProvider) -> CircuitState:
    # Read through a call: mypy would keep an attribute's narrowed type across awaits.
    return guarded.state


async def charge(guarded: CircuitBreakerProvider) -> object:
    return await outcome_of(lambda: guarded.charge(REQUEST))


async def open_circuit(guarded: CircuitBreakerProvider) -> None:
    for _ in range(THRESHOLD):
        assert isinstance(await charge(guarded), ProviderError)
    assert state(guarded) is CircuitState.OPEN


# -- closed -> open ---------------------------------------------------------------------------


async def test_consecutive_refusals_open_it_and_then_it_fails_fast_without_calling():
    clock = FakeClock()
    provider = ScriptedProvider(*(refused() for _ in range(THRESHOLD)))
    guarded = breaker(provider, clock)
    for n in range(THRESHOLD - 1):
        assert isinstance(await charge(guarded), ProviderError)
        assert state(guarded) is CircuitState.CLOSED, n
    await charge(guarded)
    assert state(guarded) is CircuitState.OPEN
    assert provider.calls == THRESHOLD

    clock.now += 4.0
    error = await charge(guarded)
    assert isinstance(error, CircuitOpenError)
    assert provider.calls == THRESHOLD  # not called
    # What the handler reads: retriable, certainly not charged, come back when it half-opens.
    assert error.retriable
    assert not error.outcome_unknown
    assert error.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert error.provider == "acme"
    assert error.retry_after == pytest.approx(OPEN_S - 4.0)
    assert "could not connect" in error.message


async def test_rate_limits_count_as_refusals():
    provider = ScriptedProvider(*(ProviderRateLimitedError("acme", "429", 1.0) for _ in range(3)))
    guarded = breaker(provider, FakeClock())
    await open_circuit(guarded)


async def test_an_answer_in_between_starts_the_count_again():
    answers: list[Step] = [
        OK,
        PaygateError(ErrorCode.PAYMENT_DECLINED, "declined"),  # an answer, though a "no"
        UnsupportedOperationError("acme", "no refunds here"),  # not retriable: an answer
    ]
    for answer in answers:
        script = [refused()] * (THRESHOLD - 1) + [answer] + [refused()] * (THRESHOLD - 1)
        provider = ScriptedProvider(*script)
        guarded = breaker(provider, FakeClock())
        for _ in script:
            await charge(guarded)
        assert state(guarded) is CircuitState.CLOSED, answer
        assert provider.calls == len(script)


async def test_timeouts_neither_open_it_nor_reset_the_count_and_pass_unchanged():
    timeout = timed_out()
    provider = ScriptedProvider(*[timed_out() for _ in range(10)], timeout)
    guarded = breaker(provider, FakeClock())
    for _ in range(11):
        seen = await charge(guarded)
        assert type(seen) is ProviderTimeoutError
        assert seen.outcome_unknown
    assert seen is timeout  # never turned into "not charged"
    assert state(guarded) is CircuitState.CLOSED

    provider.script.extend([refused(), refused(), timed_out(), refused()])
    for _ in range(4):
        await charge(guarded)
    assert state(guarded) is CircuitState.OPEN


async def test_results_of_calls_let_through_before_it_opened_do_not_count():
    slow = asyncio.Event()
    provider = ScriptedProvider(slow, *(refused() for _ in range(THRESHOLD)))
    guarded = breaker(provider, FakeClock())
    early = asyncio.create_task(guarded.charge(REQUEST))
    await provider.waiting.wait()  # it reached the provider, which holds it
    assert provider.calls == 1
    for _ in range(THRESHOLD):
        await charge(guarded)
    assert state(guarded) is CircuitState.OPEN
    slow.set()
    assert await early == OK  # the caller still gets its answer
    assert state(guarded) is CircuitState.OPEN  # an old success does not close it


# -- open -> half-open -> closed or open ------------------------------------------------------


async def test_after_the_open_period_one_probe_goes_through_and_its_success_closes_it():
    clock = FakeClock()
    gate = asyncio.Event()
    provider = ScriptedProvider(*(refused() for _ in range(THRESHOLD)), gate)
    guarded = breaker(provider, clock)
    await open_circuit(guarded)

    clock.now += OPEN_S
    probe = asyncio.create_task(guarded.charge(REQUEST))
    await provider.waiting.wait()
    assert state(guarded) is CircuitState.HALF_OPEN
    assert provider.calls == THRESHOLD + 1
    # While the probe is out, everything else fails fast; the back-off decides the wait.
    other = await charge(guarded)
    assert isinstance(other, CircuitOpenError)
    assert other.retry_after is None
    assert provider.calls == THRESHOLD + 1

    gate.set()
    assert await probe == OK
    assert state(guarded) is CircuitState.CLOSED
    assert await guarded.charge(REQUEST) == OK
    assert provider.calls == THRESHOLD + 2


@pytest.mark.parametrize("probe_result", [refused, timed_out], ids=["refused", "timed-out"])
async def test_a_probe_without_an_answer_opens_it_again_for_a_full_period(probe_result):
    clock = FakeClock()
    provider = ScriptedProvider(*(refused() for _ in range(THRESHOLD)), probe_result())
    guarded = breaker(provider, clock)
    await open_circuit(guarded)
    clock.now += OPEN_S + 5
    probed = await charge(guarded)
    assert type(probed) is type(probe_result())  # passed on as it was
    assert state(guarded) is CircuitState.OPEN

    again = await charge(guarded)
    assert isinstance(again, CircuitOpenError)
    assert again.retry_after == pytest.approx(OPEN_S)
    assert provider.calls == THRESHOLD + 1


async def test_a_cancelled_probe_lets_the_next_call_probe():
    clock = FakeClock()
    provider = ScriptedProvider(*(refused() for _ in range(THRESHOLD)), asyncio.Event())
    guarded = breaker(provider, clock)
    await open_circuit(guarded)
    clock.now += OPEN_S
    probe = asyncio.create_task(guarded.charge(REQUEST))
    await provider.waiting.wait()
    probe.cancel()  # a consumer shutting down
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert state(guarded) is CircuitState.HALF_OPEN
    assert await guarded.charge(REQUEST) == OK  # the next call is the probe
    assert state(guarded) is CircuitState.CLOSED


# -- what is guarded, what passes -------------------------------------------------------------


async def test_captures_and_refunds_are_guarded_too():
    provider = ScriptedProvider(*(refused() for _ in range(THRESHOLD)))
    guarded = breaker(provider, FakeClock())
    await open_circuit(guarded)
    capture = CaptureRequest("pay-1-capture", "pay-1", "ch_1", Money(1000, "EUR"))
    refund = RefundRequest("re-key", "re-1", "pay-1", "ch_1", Money(500, "EUR"))
    assert isinstance(await outcome_of(lambda: guarded.capture(capture)), CircuitOpenError)
    assert isinstance(await outcome_of(lambda: guarded.refund(refund)), CircuitOpenError)
    assert provider.calls == THRESHOLD


async def test_status_queries_pass_through_when_open_and_never_move_it():
    clock = FakeClock()
    provider = ScriptedProvider(*(refused() for _ in range(THRESHOLD)))
    guarded = breaker(provider, clock)
    provider.status_error = refused()
    for _ in range(THRESHOLD * 3):  # a reconciler asking a down provider
        await outcome_of(lambda: guarded.charge_status("pay-1-1"))
    assert state(guarded) is CircuitState.CLOSED

    await open_circuit(guarded)
    provider.status_error = None
    assert await guarded.charge_status("pay-1-1") == OK  # resolving in-doubt payments
    assert await guarded.charge_by_reference("ch_1") == OK
    assert await guarded.refund_status("re-key", "ch_1") is None
    assert provider.status_queries == THRESHOLD * 3 + 3
    assert state(guarded) is CircuitState.OPEN  # answers to queries do not close it


async def test_the_name_start_and_stop_are_the_providers():
    guarded = breaker(ScriptedProvider(), FakeClock())
    assert guarded.name == "acme"
    await guarded.start()
    await guarded.stop()
    await guarded.stop()


@pytest.mark.parametrize(
    "kwargs", [{"failure_threshold": 0}, {"open_s": 0.0}, {"open_s": float("inf")}]
)
def test_nonsense_is_refused(kwargs):
    with pytest.raises(ValueError, match="must be"):
        CircuitBreakerProvider(ScriptedProvider(), **kwargs)


# -- metrics and wiring -----------------------------------------------------------------------


def gauge(metrics: Metrics, provider: str = "acme") -> float:
    value = metrics.registry.get_sample_value(
        "paygate_provider_circuit_state", {"provider": provider}
    )
    assert value is not None, f"no circuit state for {provider}"
    return value


def transitions(metrics: Metrics, before: str, after: str) -> float:
    value = metrics.registry.get_sample_value(
        "paygate_provider_circuit_transitions_total",
        {"provider": "acme", "from": before, "to": after},
    )
    return value or 0.0


async def test_the_gauge_shows_each_state_and_the_counter_each_transition():
    clock, metrics = FakeClock(), Metrics()
    provider = ScriptedProvider(*(refused() for _ in range(THRESHOLD)), refused())
    guarded = breaker(provider, clock, metrics)
    assert gauge(metrics) == 0  # there from the start, closed
    await open_circuit(guarded)
    assert gauge(metrics) == 2
    clock.now += OPEN_S
    await charge(guarded)  # the probe, refused
    assert gauge(metrics) == 2
    clock.now += OPEN_S
    gate = asyncio.Event()
    provider.script.append(gate)
    probe = asyncio.create_task(guarded.charge(REQUEST))
    await provider.waiting.wait()
    assert gauge(metrics) == 1
    gate.set()
    await probe
    assert gauge(metrics) == 0
    assert transitions(metrics, "closed", "open") == 1
    assert transitions(metrics, "open", "half_open") == 2
    assert transitions(metrics, "half_open", "open") == 1
    assert transitions(metrics, "half_open", "closed") == 1


def test_every_configured_provider_is_built_behind_a_breaker_that_reports():
    metrics = Metrics()
    settings = Settings(
        routes={"*": ["sandbox", "sandbox-2"]},
        sandbox_urls={"sandbox-2": "http://127.0.0.1:8082"},
        circuit_failure_threshold=7,
        circuit_open_s=3.0,
    )
    providers = build_providers(settings, metrics)
    for name in ("sandbox", "sandbox-2"):
        provider = providers.get(name)
        assert isinstance(provider, CircuitBreakerProvider)
        assert provider.name == name
        assert gauge(metrics, name) == 0


def test_a_threshold_of_0_builds_no_breaker():
    providers = build_providers(Settings(provider="sandbox-inprocess", circuit_failure_threshold=0))
    assert not isinstance(providers.get("sandbox"), CircuitBreakerProvider)
