"""Errors a provider adapter may raise. Vendor exceptions never escape an adapter.

Exception tree::

    ProviderError                      retriable?  outcome unknown?
    ├── ProviderUnavailableError       yes         no   (certainly not charged: connection
    │   │                                                refused, 5xx before processing)
    │   └── ProviderRateLimitedError   yes         no   (carries retry_after seconds)
    ├── ProviderTimeoutError           no          yes  (may have charged: ask, never resend
    │                                                    blindly)
    └── UnsupportedOperationError      no          no

Callers branch on the class attributes ``retriable`` and ``outcome_unknown``, and read
``retry_after`` (None unless a rate limit gave one), never on the concrete class, so a new
adapter-specific subclass needs no change above the adapter.
"""

from __future__ import annotations

from typing import ClassVar

from domain.errors import ErrorCode


class ProviderError(Exception):
    retriable: ClassVar[bool] = False
    outcome_unknown: ClassVar[bool] = False
    code: ClassVar[ErrorCode] = ErrorCode.PROVIDER_UNAVAILABLE
    # Seconds the provider asked to wait before the next call; only a rate limit says.
    retry_after: float | None = None

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.message = message


class ProviderUnavailableError(ProviderError):
    retriable = True


class ProviderRateLimitedError(ProviderUnavailableError):
    def __init__(self, provider: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(provider, message)
        self.retry_after = retry_after


class ProviderTimeoutError(ProviderError):
    outcome_unknown = True
    code = ErrorCode.PROVIDER_TIMEOUT


class UnsupportedOperationError(ProviderError):
    code = ErrorCode.INTERNAL_ERROR
