"""A provider plugin's factory, installed by tests through a ``paygate.providers`` entry point."""

from __future__ import annotations

from paygate.settings import Settings
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


class _Unlagged:
    """A provider that says how long it honours a key but not whether its status query
    lags behind its charges."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.idempotency_window = None


def build_unlagged(settings: Settings, name: str) -> object:
    return _Unlagged(name)
