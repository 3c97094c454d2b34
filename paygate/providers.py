"""Builds the configured payment provider by name."""

from __future__ import annotations

from paygate.settings import Settings
from providers.port import PaymentProvider
from providers.sandbox import InProcessSandboxProvider, SandboxHttpProvider


def build_provider(settings: Settings) -> PaymentProvider:
    if settings.provider == "sandbox":
        return SandboxHttpProvider(settings.sandbox_url, timeout_s=settings.provider_timeout_s)
    if settings.provider == "sandbox-inprocess":
        return InProcessSandboxProvider(call_timeout_s=settings.provider_timeout_s)
    raise SystemExit(f"unknown provider {settings.provider!r}; known: sandbox, sandbox-inprocess")
