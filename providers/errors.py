"""Errors a provider adapter may raise. Vendor exceptions never escape an adapter.

Exception tree::

    ProviderError                      retriable?  outcome unknown?
    ├── ProviderUnavailableError       yes         no   (certainly not charged: connection
    │   │                                                refused, 5xx before processing)
    │   └── ProviderRateLimitedError   yes         no   (carries retry_after seconds)
    ├── ProviderTimeoutError           no          yes  (may have charged: ask, never resend
    │                                                    blindly)
    └── UnsupportedOperationError      no          no

``answer_unverified`` (class attribute, False unless an adapter's subclass sets it): the
provider answered, but the answer's signature did not verify (Alipay's RSA2, checked with
Alipay's public key). It is read as an unknown outcome like a timeout; counted apart
(providers.answer_checks), because a wrong public key makes *every* answer fail so, which
would otherwise look like a provider that never answers.

Callers branch on the class attributes ``retriable`` and ``outcome_unknown``, and read
``retry_after`` (None unless the provider, or a circuit breaker, gave one) and
``held_reference`` (None unless the answer is a hold nobody asked for, below), never on the
concrete class, so a new adapter-specific subclass needs no change above the adapter.

``held_reference``: the provider holds the payer's money under that reference, authorized
and not captured, though the charge asked to capture at once (Stripe: a PaymentIntent in
``requires_capture`` without ``capture_method=manual``). Not the outcome asked for, so never
recorded as one (the payment stays pending); but a hold all the same, which the stray-charge
sweep voids when the payment does not stand on it (consumer.stray_charges).

``retry_after`` is bounded whenever it is set, by the constructor or later
(:func:`providers.retry_after.bounded_retry_after`): None or finite, in
``[0, MAX_RETRY_AFTER_S]``, whatever number the provider sent.
"""

from __future__ import annotations

from typing import ClassVar

from domain.errors import ErrorCode
from providers.retry_after import bounded_retry_after


class ProviderError(Exception):
    retriable: ClassVar[bool] = False
    outcome_unknown: ClassVar[bool] = False
    answer_unverified: ClassVar[bool] = False  # see the module docstring
    code: ClassVar[ErrorCode] = ErrorCode.PROVIDER_UNAVAILABLE
    _retry_after: float | None = None
    held_reference: str | None = None  # see the module docstring

    def __init__(self, provider: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.message = message
        self.retry_after = retry_after

    @property
    def retry_after(self) -> float | None:
        """Seconds to wait before the next call, as the provider asked (bounded), or None."""
        return self._retry_after

    @retry_after.setter
    def retry_after(self, seconds: float | None) -> None:
        # Bounded here, where every provider wait enters, so no caller can be handed inf.
        self._retry_after = bounded_retry_after(seconds)


class ProviderUnavailableError(ProviderError):
    retriable = True


class ProviderRateLimitedError(ProviderUnavailableError):
    def __init__(self, provider: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(provider, message, retry_after=retry_after)


class ProviderTimeoutError(ProviderError):
    outcome_unknown = True
    code = ErrorCode.PROVIDER_TIMEOUT


class UnsupportedOperationError(ProviderError):
    code = ErrorCode.INTERNAL_ERROR
