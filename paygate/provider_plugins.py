"""Providers from other packages, found by name through the ``paygate.providers`` entry points.

A package that ships an adapter declares, in its ``pyproject.toml``::

    [project.entry-points."paygate.providers"]
    acme = "acme_paygate:build"

where ``build(settings, name)`` returns a :class:`providers.port.PaymentProvider`. Then
``PAYGATE_PROVIDER=acme`` or ``PAYGATE_ROUTES={"*": ["acme"]}`` uses it; nothing in paygate
changes. Built-in names win over a plugin of the same name.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from importlib.metadata import entry_points
from typing import Final

from paygate.settings import Settings
from providers.port import PaymentProvider

GROUP: Final = "paygate.providers"

ProviderFactory = Callable[[Settings, str], PaymentProvider]


def plugin_names() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def plugin_provider(settings: Settings, name: str) -> PaymentProvider | None:
    """The provider the installed plugin ``name`` builds, or None if no plugin has that name."""
    found = entry_points(group=GROUP, name=name)
    if not found:
        return None
    # Two distributions claiming one name would make the choice depend on sys.path order.
    if len(found) > 1:
        raise SystemExit(f"provider {name!r} is declared by more than one installed package")
    (entry,) = found
    factory: ProviderFactory = entry.load()
    provider = factory(settings, name)
    if provider.name != name:
        raise SystemExit(
            f"the {name!r} provider plugin built a provider named {provider.name!r}; routes "
            "and stored attempts need the two to match"
        )
    # Checked here, not trusted: a plugin written before the port asked for it would
    # otherwise fail on its first re-send, the one call where the answer decides whether a
    # key may be sent again without charging twice (domain.resend_window).
    window = getattr(provider, "idempotency_window", _MISSING)
    if window is not None and not isinstance(window, timedelta):
        raise SystemExit(
            f"the {name!r} provider plugin does not declare idempotency_window (a timedelta, "
            "or None when its provider honours keys for ever)"
        )
    # Refused rather than defaulted: no lag is a guess that keeps a late charge unseen for
    # good (a "no charge" marked final too soon), and any other default is a guess too;
    # only the plugin's author knows what its status query reads (domain.search_lag).
    lag = getattr(provider, "status_search_lag", _MISSING)
    if not isinstance(lag, timedelta) or lag < timedelta(0):
        raise SystemExit(
            f"the {name!r} provider plugin does not declare status_search_lag (a timedelta "
            "of at least 0: how long after a charge its charge_status may still not show it)"
        )
    # The same for refunds: a refund withheld past the window is failed by an operator only
    # this long after its key's last possible arrival (domain.operator_settlement).
    refund_lag = getattr(provider, "refund_status_lag", _MISSING)
    if not isinstance(refund_lag, timedelta) or refund_lag < timedelta(0):
        raise SystemExit(
            f"the {name!r} provider plugin does not declare refund_status_lag (a timedelta "
            "of at least 0: how long after a refund its refund_status may still not show it)"
        )
    return provider


_MISSING = object()
