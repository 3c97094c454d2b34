"""A provider plugin's factory, installed by tests through a ``paygate.providers`` entry point."""

from __future__ import annotations

from datetime import timedelta

from paygate.settings import Settings
from providers.charge_only import ChargeOnlyProvider
from providers.errors import ProviderTimeoutError
from providers.port import ChargeOutcome, ChargeRequest
from providers.sandbox import InProcessSandboxProvider


def build(settings: Settings, name: str) -> InProcessSandboxProvider:
    return InProcessSandboxProvider(call_timeout_s=settings.provider_timeout_s, name=name)


def build_misnamed(settings: Settings, name: str) -> InProcessSandboxProvider:
    return InProcessSandboxProvider(name="not-" + name)


class _Unwindowed:
    """A provider written before the port asked how long it honours a key."""

    def __init__(self, name: str) -> None:
        self.name = name


def build_unwindowed(settings: Settings, name: str) -> object:
    return _Unwindowed(name)


class SilentWindowed(ChargeOnlyProvider):
    """Honours a key for 24 hours, as Stripe does; every charge times out and its status
    query finds nothing (a search that has not caught up): what paygate withholds."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def idempotency_window(self) -> timedelta | None:
        return timedelta(hours=24)

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        raise ProviderTimeoutError(self._name, "no answer in time")

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        return None


def build_silent_windowed(settings: Settings, name: str) -> SilentWindowed:
    return SilentWindowed(name)


class _Unlagged:
    """A provider that says how long it honours a key but not whether its status query
    lags behind its charges."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.idempotency_window = None


def build_unlagged(settings: Settings, name: str) -> object:
    return _Unlagged(name)


class _RefundUnlagged:
    """A provider that says how far its charge status lags but not its refund status."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.idempotency_window = timedelta(hours=24)
        self.status_search_lag = timedelta(0)


def build_refund_unlagged(settings: Settings, name: str) -> object:
    return _RefundUnlagged(name)
