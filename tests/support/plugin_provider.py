"""A provider plugin's factory, installed by tests through a ``paygate.providers`` entry point."""

from __future__ import annotations

from paygate.settings import Settings
from providers.sandbox import InProcessSandboxProvider


def build(settings: Settings, name: str) -> InProcessSandboxProvider:
    return InProcessSandboxProvider(call_timeout_s=settings.provider_timeout_s, name=name)


def build_misnamed(settings: Settings, name: str) -> InProcessSandboxProvider:
    return InProcessSandboxProvider(name="not-" + name)
