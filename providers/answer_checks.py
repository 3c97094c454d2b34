"""Counting the provider answers whose signature did not verify.

An adapter that verifies its provider's signatures (Alipay: RSA2 with Alipay's public key)
raises an error with ``answer_unverified`` set for an answer that fails the check, and the
callers read it as an unknown outcome: asked again, never believed. That is right for one
forged or damaged answer; but with a wrong public key configured *every* answer fails so,
and each payment stays pending, its query failing at each pass, with nothing but a warning
line per payment to tell. This wrapper counts each such answer
(``paygate_provider_answers_unverified_total``), so that a steady rate pages
(PaygateProviderAnswersUnverified, docs/runbook.md).

It changes nothing of the call: the error goes on to the caller as it was raised.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from providers.delegating import DelegatingProvider
from providers.errors import ProviderError
from providers.port import PaymentProvider

_T = TypeVar("_T")


class UnverifiedAnswerCounter(DelegatingProvider):
    """``inner``, with ``observe(provider name)`` called for each call that raised an
    error whose answer did not verify."""

    def __init__(self, inner: PaymentProvider, observe: Callable[[str], None]) -> None:
        super().__init__(inner)
        self._observe = observe

    async def _moving_money(self, call: Callable[[], Awaitable[_T]]) -> _T:
        return await self._counting(call)

    async def _asking(self, call: Callable[[], Awaitable[_T]]) -> _T:
        return await self._counting(call)

    async def _counting(self, call: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await call()
        except ProviderError as exc:
            if exc.answer_unverified:
                self._observe(self.name)
            raise
