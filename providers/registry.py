"""The configured payment providers, by name, started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator

from providers.call_gate import GatedProvider
from providers.port import PaymentProvider


class UnknownProviderError(LookupError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        super().__init__(f"unknown payment provider {name!r}; configured: {sorted(known)}")
        self.name = name


class Providers:
    """Providers keyed by their ``name``; a name is what attempts record in ``provider``.

    Read like a mapping (``in``, ``[]``, iteration over names), except that :meth:`get`
    raises for an unknown name instead of returning None: an attempt must never be asked
    of, or sent to, a provider other than its own.
    """

    def __init__(self, providers: Iterable[PaymentProvider]) -> None:
        self._providers: dict[str, PaymentProvider] = {}
        for provider in providers:
            if provider.name in self._providers:
                raise ValueError(f"two providers are named {provider.name!r}")
            self._providers[provider.name] = provider
        if not self._providers:
            raise ValueError("no payment provider configured")

    @classmethod
    def of(cls, *providers: PaymentProvider) -> Providers:
        return cls(providers)

    def gated(self, limit: int) -> Providers:
        """The same providers, at most ``limit`` calls to any of them at once in all
        (see providers.call_gate). Start and stop this registry or the original: either
        starts and stops the same providers."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        gate = asyncio.Semaphore(limit)
        return Providers(GatedProvider(provider, gate) for provider in self._providers.values())

    def get(self, name: str) -> PaymentProvider:
        """The provider called ``name``; raises :class:`UnknownProviderError` otherwise."""
        provider = self._providers.get(name)
        if provider is None:
            raise UnknownProviderError(name, self._providers)
        return provider

    def __getitem__(self, name: str) -> PaymentProvider:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._providers

    def __iter__(self) -> Iterator[str]:
        return iter(self._providers)

    def __len__(self) -> int:
        return len(self._providers)

    async def start_all(self) -> None:
        """Start every provider; if one fails, those already started are stopped again."""
        started: list[PaymentProvider] = []
        try:
            for provider in self._providers.values():
                await provider.start()
                started.append(provider)
        except BaseException:
            for provider in reversed(started):
                await _stop_quietly(provider)
            raise

    async def stop_all(self) -> None:
        """Stop every provider (safe twice); the first error is raised after all stopped."""
        first: Exception | None = None
        for provider in reversed(self._providers.values()):
            try:
                await provider.stop()
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first


async def _stop_quietly(provider: PaymentProvider) -> None:
    # The start error is the one worth raising.
    with contextlib.suppress(Exception):
        await provider.stop()
