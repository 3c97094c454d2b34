"""The sandbox acquirer: deterministic test accounts, fault injection and a ledger.

Two ways to use it, one decision core (:class:`SandboxAcquirer`):

- in process: :class:`InProcessSandboxProvider` over a :class:`MemoryLedger`;
- over HTTP: :func:`build_sandbox_app` (or ``python -m providers.sandbox``) serves it with a
  :class:`SqliteLedger`, and :class:`SandboxHttpProvider` is paygate's adapter to it.

``docs/sandbox.md`` lists the test account numbers (``TEST_ACCOUNTS``) and the endpoints.
"""

from providers.sandbox.accounts import (
    DEFAULT_BEHAVIOUR,
    TEST_ACCOUNTS,
    AccountOutcome,
    Behaviour,
    Timing,
    behaviour_for,
)
from providers.sandbox.acquirer import SandboxAcquirer
from providers.sandbox.adapter import SandboxHttpProvider, SandboxRequestRejectedError
from providers.sandbox.config import SandboxConfig
from providers.sandbox.errors import (
    SandboxError,
    SandboxIdempotencyConflictError,
    SandboxRefusedError,
    SandboxUnavailableError,
)
from providers.sandbox.inprocess import InProcessSandboxProvider
from providers.sandbox.ledger import Ledger, MemoryLedger
from providers.sandbox.records import (
    ChargeRecord,
    SandboxChargeParams,
    SandboxErrorCode,
    SandboxStatus,
)
from providers.sandbox.refund_records import (
    RefundBehaviour,
    RefundRecord,
    SandboxRefundErrorCode,
    SandboxRefundStatus,
)
from providers.sandbox.service import build_sandbox_app
from providers.sandbox.sqlite_ledger import SqliteLedger
from providers.sandbox.stats import SandboxStats

__all__ = [
    "DEFAULT_BEHAVIOUR",
    "TEST_ACCOUNTS",
    "AccountOutcome",
    "Behaviour",
    "ChargeRecord",
    "InProcessSandboxProvider",
    "Ledger",
    "MemoryLedger",
    "RefundBehaviour",
    "RefundRecord",
    "SandboxAcquirer",
    "SandboxChargeParams",
    "SandboxConfig",
    "SandboxError",
    "SandboxErrorCode",
    "SandboxHttpProvider",
    "SandboxIdempotencyConflictError",
    "SandboxRefundErrorCode",
    "SandboxRefundStatus",
    "SandboxRefusedError",
    "SandboxRequestRejectedError",
    "SandboxStats",
    "SandboxStatus",
    "SandboxUnavailableError",
    "SqliteLedger",
    "Timing",
    "behaviour_for",
    "build_sandbox_app",
]
