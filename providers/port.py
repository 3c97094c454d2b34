"""The provider port: what paygate needs from any payment provider.

An adapter translates these calls to its provider's API or SDK, passes the attempt key as
the provider's idempotency key, and maps every answer to a :class:`ChargeOutcome` or one of
the errors in :mod:`providers.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from domain.accounts import Account
from domain.commands import PaymentMethod
from domain.errors import PaygateError
from domain.money import Money


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """One attempt to charge. ``attempt_key`` is sent as the provider's idempotency key."""

    attempt_key: str
    payment_request_id: str
    amount: Money
    payment_method: PaymentMethod
    payer: Account
    payee: Account
    metadata: Mapping[str, str] = field(default_factory=dict)


class ChargeStatus(StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED = "declined"


@dataclass(frozen=True, slots=True)
class ChargeOutcome:
    """A final answer from the provider. A decline carries a catalogue error."""

    status: ChargeStatus
    provider_reference: str | None
    error: PaygateError | None = None


class PaymentProvider(Protocol):
    """A payment provider. ``start``/``stop`` bracket its clients; ``stop`` is safe twice."""

    @property
    def name(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        """Charge once per attempt key; raises :class:`providers.errors.ProviderError`."""
        ...

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        """The outcome of an earlier charge, or None if the provider never received it."""
        ...
