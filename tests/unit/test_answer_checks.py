"""Answers whose signature did not verify are counted, per provider, and passed on as raised;
the consumer's providers are built with the count (paygate.providers.build_providers)."""

from __future__ import annotations

import pytest

from paygate.providers import build_providers, counting_unverified
from paygate.settings import Settings
from providers.alipay.adapter import AlipayAnswerNotVerifiedError
from providers.answer_checks import UnverifiedAnswerCounter
from providers.charge_only import ChargeOnlyProvider
from providers.circuit_breaker import CircuitBreakerProvider
from providers.errors import ProviderError, ProviderTimeoutError
from providers.port import ChargeOutcome, ChargeRequest
from telemetry.metrics import Metrics
from tests.support.metric_samples import sample_sum

pytestmark = pytest.mark.unit


class _Answering(ChargeOnlyProvider):
    """Raises the next error of ``errors`` at each status question."""

    def __init__(self, errors: list[ProviderError]) -> None:
        super().__init__()
        self.errors = errors

    @property
    def name(self) -> str:
        return "signed"

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        raise self.errors.pop(0)

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        raise self.errors.pop(0)


def _unverified(metrics: Metrics) -> float:
    return sample_sum(metrics, "paygate_provider_answers_unverified_total", provider="signed")


async def test_only_answers_that_did_not_verify_are_counted_and_the_error_goes_on():
    metrics = Metrics()
    inner = _Answering(
        [
            AlipayAnswerNotVerifiedError("signed", "answer not verified"),
            ProviderTimeoutError("signed", "no answer in time"),
            AlipayAnswerNotVerifiedError("signed", "answer not verified"),
        ]
    )
    provider = counting_unverified(inner, metrics)
    with pytest.raises(AlipayAnswerNotVerifiedError):
        await provider.charge_status("k-a1")
    with pytest.raises(ProviderTimeoutError) as timeout:
        await provider.charge_status("k-a1")
    assert not timeout.value.answer_unverified
    with pytest.raises(AlipayAnswerNotVerifiedError) as unverified:
        await provider.charge_status("k-a1")
    assert unverified.value.outcome_unknown  # still read as an unknown outcome
    assert _unverified(metrics) == 2


def test_the_consumers_providers_count_them_and_without_metrics_nothing_wraps():
    metrics = Metrics()
    built = build_providers(Settings(provider="sandbox-inprocess"), metrics).get("sandbox")
    assert isinstance(built, CircuitBreakerProvider)
    assert isinstance(built._inner, UnverifiedAnswerCounter)
    plain = counting_unverified(_Answering([]), None)
    assert isinstance(plain, _Answering)
