"""Builds the configured payment providers, and the router over them, from the settings.

Route names are provider kinds (``sandbox``, ``sandbox-inprocess``, ``stripe``, ``alipay``), extra
sandbox acquirers named in ``PAYGATE_SANDBOX_URLS`` (``sandbox-<suffix>``), or providers of
installed plugins (see :mod:`paygate.provider_plugins`). The in-process
sandbox answers to ``sandbox``, as it always has, so attempts record ``sandbox`` for it.
Each provider of :func:`build_providers` is wrapped in a
:class:`providers.circuit_breaker.CircuitBreakerProvider`, which keeps its name, over a
:class:`providers.answer_checks.UnverifiedAnswerCounter` when metrics are given.
"""

from __future__ import annotations

from paygate.alipay_dev import with_dev_keys
from paygate.provider_plugins import plugin_names, plugin_provider
from paygate.settings import Settings
from providers.alipay import AlipayConfig, AlipayMode, AlipayProvider
from providers.answer_checks import UnverifiedAnswerCounter
from providers.circuit_breaker import CircuitBreakerProvider, CircuitObserver, CircuitState
from providers.port import PaymentProvider
from providers.registry import Providers
from providers.routing import Router
from providers.sandbox import InProcessSandboxProvider, SandboxHttpProvider
from providers.stripe import StripeProvider
from telemetry.metrics import Metrics

_KNOWN = "sandbox, sandbox-inprocess, stripe, alipay, or a name from PAYGATE_SANDBOX_URLS"


def build_provider(settings: Settings, name: str | None = None) -> PaymentProvider:
    """The provider a route name stands for (default: ``PAYGATE_PROVIDER``)."""
    name = settings.provider if name is None else name
    if name == "sandbox" or name in settings.sandbox_urls:
        url = settings.sandbox_urls.get(name, settings.sandbox_url)
        return SandboxHttpProvider(url, timeout_s=settings.provider_timeout_s, name=name)
    if name == "sandbox-inprocess":
        return InProcessSandboxProvider(call_timeout_s=settings.provider_timeout_s)
    if name == "alipay":
        return _alipay(settings)
    if name == "stripe":
        if settings.stripe_api_key is None:
            raise SystemExit("the stripe provider needs PAYGATE_STRIPE_API_KEY")
        return StripeProvider(
            settings.stripe_api_key,
            api_base=settings.stripe_api_base,
            timeout_s=settings.provider_timeout_s,
        )
    plugin = plugin_provider(settings, name)
    if plugin is not None:
        return plugin
    plugins = ", ".join(plugin_names()) or "none installed"
    raise SystemExit(f"unknown provider {name!r}; known: {_KNOWN}; plugins: {plugins}")


def _alipay(settings: Settings) -> AlipayProvider:
    settings = with_dev_keys(settings)
    if (
        settings.alipay_app_id is None
        or settings.alipay_app_private_key is None
        or settings.alipay_public_key is None
    ):
        raise SystemExit(
            "the alipay provider needs PAYGATE_ALIPAY_APP_ID, PAYGATE_ALIPAY_APP_PRIVATE_KEY "
            "and PAYGATE_ALIPAY_PUBLIC_KEY"
        )
    try:
        return AlipayProvider(
            AlipayConfig(
                app_id=settings.alipay_app_id,
                app_private_key=settings.alipay_app_private_key,
                alipay_public_key=settings.alipay_public_key,
                gateway_url=settings.alipay_gateway_url,
                notify_url=settings.alipay_notify_url,
                mode=AlipayMode(settings.alipay_mode),
                timeout_s=settings.provider_timeout_s,
                action_ttl_s=settings.alipay_action_ttl_s,
            )
        )
    except ValueError as exc:
        raise SystemExit(f"the alipay provider is misconfigured: {exc}") from None


class CircuitMetrics:
    """The breakers' :class:`CircuitObserver`: their state and transitions as metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def circuit_changed(
        self, provider: str, before: CircuitState | None, after: CircuitState
    ) -> None:
        self._metrics.provider_circuit_state.labels(provider).set(after.value)
        if before is not None:
            self._metrics.provider_circuit_transitions.labels(
                provider, before.label, after.label
            ).inc()


def build_providers(settings: Settings, metrics: Metrics | None = None) -> Providers:
    """Every provider the routes name (``PAYGATE_ROUTES``, else ``PAYGATE_PROVIDER``), each
    behind its own circuit breaker, which reports its state to ``metrics``."""
    observer = None if metrics is None else CircuitMetrics(metrics)
    try:
        return Providers(
            with_circuit_breaker(
                settings, counting_unverified(build_provider(settings, name), metrics), observer
            )
            for name in settings.provider_names
        )
    except ValueError as exc:  # e.g. sandbox and sandbox-inprocess both answer to "sandbox"
        raise SystemExit(f"providers: {exc}") from exc


def counting_unverified(provider: PaymentProvider, metrics: Metrics | None) -> PaymentProvider:
    """``provider`` with its answers whose signature did not verify counted in ``metrics``
    (providers.answer_checks); as it is without metrics."""
    if metrics is None:
        return provider
    counter = metrics.provider_answers_unverified
    return UnverifiedAnswerCounter(provider, lambda name: counter.labels(name).inc())


def with_circuit_breaker(
    settings: Settings, provider: PaymentProvider, observer: CircuitObserver | None = None
) -> PaymentProvider:
    """``provider`` behind a circuit breaker (``PAYGATE_CIRCUIT_*``); as it is when the
    threshold is 0. Built-in and plugin providers alike."""
    if settings.circuit_failure_threshold == 0:
        return provider
    return CircuitBreakerProvider(
        provider,
        failure_threshold=settings.circuit_failure_threshold,
        open_s=settings.circuit_open_s,
        observer=observer,
    )


def build_router(settings: Settings, providers: Providers) -> Router:
    """The router of the settings' routes, over the names ``providers`` answer to."""
    names = dict(_answer_names(settings, providers))
    return Router(
        {key: [names[n] for n in route] for key, route in settings.effective_routes.items()}
    )


def _answer_names(settings: Settings, providers: Providers) -> list[tuple[str, str]]:
    pairs = []
    for name in settings.provider_names:
        answers_to = "sandbox" if name == "sandbox-inprocess" else name
        if answers_to not in providers:
            raise SystemExit(f"route names provider {name!r}, which is not configured")
        pairs.append((name, answers_to))
    return pairs
