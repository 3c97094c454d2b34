"""Routing: which providers, in order, may take a payment. Pure: no I/O.

Routes map a key to an ordered list of provider names. A key is ``"<method>:<CUR>"``
(payment method and currency), ``"<method>"`` (any currency) or ``"*"`` (everything else);
the most specific key that matches wins. The first provider of the list is called first;
the next ones are failover targets, used only when a call certainly did not charge (see
:mod:`consumer.payment_handler`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from domain.payments import PaymentMethod

DEFAULT_ROUTE = "*"
_CURRENCY = re.compile(r"[A-Z]{3}")
_METHODS = frozenset(m.value for m in PaymentMethod)


class RoutingError(ValueError):
    """The routes are malformed (raised when a :class:`Router` is built)."""


class Router:
    def __init__(self, routes: Mapping[str, Sequence[str]]) -> None:
        if DEFAULT_ROUTE not in routes:
            raise RoutingError(f"routes need a default route {DEFAULT_ROUTE!r}")
        checked: dict[str, tuple[str, ...]] = {}
        for key, names in routes.items():
            _check_key(key)
            if isinstance(names, str):
                raise RoutingError(f"route {key!r} must be a list of provider names")
            if not names:
                raise RoutingError(f"route {key!r} has no provider")
            if any(not isinstance(n, str) or not n for n in names):
                raise RoutingError(f"route {key!r} has an empty provider name")
            if len(set(names)) != len(names):
                raise RoutingError(f"route {key!r} names a provider twice: {list(names)}")
            checked[key] = tuple(names)
        self._routes = checked

    @classmethod
    def catch_all(cls, provider: str) -> Router:
        """Every payment to one provider, no failover."""
        return cls({DEFAULT_ROUTE: [provider]})

    @property
    def routes(self) -> dict[str, list[str]]:
        return {key: list(names) for key, names in self._routes.items()}

    def provider_names(self) -> list[str]:
        """Every provider some route names, each once, in order of first mention."""
        return list(dict.fromkeys(n for names in self._routes.values() for n in names))

    def route(self, payment_method: str, currency: str) -> list[str]:
        """The providers for a payment, in the order they are tried."""
        for key in (f"{payment_method}:{currency}", payment_method, DEFAULT_ROUTE):
            names = self._routes.get(key)
            if names is not None:
                return list(names)
        raise AssertionError("unreachable: the default route always exists")


def _check_key(key: str) -> None:
    if key == DEFAULT_ROUTE:
        return
    method, sep, currency = key.partition(":")
    if method not in _METHODS:
        raise RoutingError(
            f"route key {key!r}: unknown payment method {method!r}; known: {sorted(_METHODS)}"
        )
    if sep and not _CURRENCY.fullmatch(currency):
        raise RoutingError(f"route key {key!r}: the currency must be 3 capital letters")
