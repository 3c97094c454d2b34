"""What the sandbox acquirer itself refuses; its entrypoints turn these into answers.

Exception tree::

    SandboxError
    ├── SandboxUnavailableError        5xx before processing: nothing recorded or charged
    ├── SandboxIdempotencyConflictError  the key was used with other parameters (409)
    └── SandboxRefusedError            a refund or capture the charge does not allow (422):
                                       nothing recorded; carries a paygate catalogue code

The HTTP service answers 503, 409 and 422; the in-process provider raises
:class:`providers.errors.ProviderUnavailableError`, an ``idempotency_conflict``
:class:`domain.errors.PaygateError` and a PaygateError with the refusal's code, exactly as
the HTTP adapter does.
"""

from __future__ import annotations

from domain.errors import ErrorCode


class SandboxError(Exception):
    pass


class SandboxUnavailableError(SandboxError):
    """5xx before processing. ``retry_after`` is the ``Retry-After`` value to answer with,
    as text and unchecked (None: no header)."""

    def __init__(self, message: str, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SandboxIdempotencyConflictError(SandboxError):
    pass


class SandboxRefusedError(SandboxError):
    """The charge does not allow this refund or capture: unknown, declined, not captured,
    too little left, another currency. ``code`` is the paygate catalogue code it maps to."""

    def __init__(self, code: ErrorCode, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
