"""Builds the configured payment provider by name."""

from __future__ import annotations

from paygate.settings import Settings
from providers.port import PaymentProvider
from providers.sandbox import InProcessSandboxProvider, SandboxHttpProvider
from providers.stripe import StripeProvider


def build_provider(settings: Settings) -> PaymentProvider:
    if settings.provider == "sandbox":
        return SandboxHttpProvider(settings.sandbox_url, timeout_s=settings.provider_timeout_s)
    if settings.provider == "sandbox-inprocess":
        return InProcessSandboxProvider(call_timeout_s=settings.provider_timeout_s)
    if settings.provider == "stripe":
        if settings.stripe_api_key is None:
            raise SystemExit("PAYGATE_PROVIDER=stripe needs PAYGATE_STRIPE_API_KEY")
        return StripeProvider(
            settings.stripe_api_key,
            api_base=settings.stripe_api_base,
            timeout_s=settings.provider_timeout_s,
        )
    raise SystemExit(
        f"unknown provider {settings.provider!r}; known: sandbox, sandbox-inprocess, stripe"
    )
