"""What the sandbox acquirer itself refuses; its entrypoints turn these into answers.

Exception tree::

    SandboxError
    ├── SandboxUnavailableError        5xx before processing: nothing recorded or charged
    └── SandboxIdempotencyConflictError  the key was used with other parameters (409)

The HTTP service answers 503 and 409; the in-process provider raises
:class:`providers.errors.ProviderUnavailableError` and an ``idempotency_conflict``
:class:`domain.errors.PaygateError`, exactly as the HTTP adapter does.
"""

from __future__ import annotations


class SandboxError(Exception):
    pass


class SandboxUnavailableError(SandboxError):
    pass


class SandboxIdempotencyConflictError(SandboxError):
    pass
