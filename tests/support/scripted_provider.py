"""A provider that answers from a script and records every call: the unit tests' provider.

Each operation of the port gives its scripted answers in order. An answer that is an
exception is raised; a callable is called with the request first (what happens *while*
the call is in flight, e.g. another worker's move) and its result is the answer; anything
else is returned. An operation with no answer left fails the test: a test scripts every
provider call it expects, so an unexpected call (a second charge) cannot pass unnoticed.
"""

from __future__ import annotations

import inspect
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.next_action import NextAction, NextActionType
from providers.port import (
    CancelRequest,
    CaptureRequest,
    ChargeOutcome,
    ChargeRequest,
    ChargeStatus,
    ProviderRefundStatus,
    RefundOutcome,
    RefundRequest,
)

OPERATIONS = (
    "charge",
    "charge_status",
    "charge_by_reference",
    "capture",
    "close_charge",
    "cancel",
    "refund",
    "refund_status",
)


def charged(reference: str = "ch_1") -> ChargeOutcome:
    return ChargeOutcome(ChargeStatus.SUCCEEDED, reference)


def authorized(reference: str = "ch_1") -> ChargeOutcome:
    return ChargeOutcome(ChargeStatus.AUTHORIZED, reference)


def canceled(reference: str = "ch_1") -> ChargeOutcome:
    return ChargeOutcome(ChargeStatus.CANCELED, reference)


def declined(reference: str | None = "ch_declined", error: Any = None) -> ChargeOutcome:
    return ChargeOutcome(ChargeStatus.DECLINED, reference, error)


def requires_action(
    reference: str = "ch_1", url: str = "https://acs.example/3ds/ch_1", expires_at: Any = None
) -> ChargeOutcome:
    when = expires_at or datetime(2030, 1, 1, tzinfo=UTC)
    return ChargeOutcome(
        ChargeStatus.REQUIRES_ACTION,
        reference,
        next_action=NextAction.of(NextActionType.REDIRECT_URL, url, when),
    )


def expired(reference: str | None = "ch_1") -> ChargeOutcome:
    return ChargeOutcome(ChargeStatus.EXPIRED, reference)


def refunded(reference: str = "re_1") -> RefundOutcome:
    return RefundOutcome(ProviderRefundStatus.SUCCEEDED, reference)


def refund_pending(reference: str = "re_1") -> RefundOutcome:
    return RefundOutcome(ProviderRefundStatus.PENDING, reference)


def refund_failed(error: Any = None) -> RefundOutcome:
    return RefundOutcome(ProviderRefundStatus.FAILED, None, error)


class ScriptedProvider:
    # Keys honoured for ever, unless a test sets a window.
    idempotency_window: timedelta | None = None
    # Its status answers show a charge at once, unless a test sets a lag.
    status_search_lag: timedelta = timedelta(0)
    refund_status_lag: timedelta = timedelta(0)

    def __init__(self, name: str = "scripted") -> None:
        self._name = name
        self._answers: dict[str, deque[object]] = {op: deque() for op in OPERATIONS}
        self.calls: list[tuple[str, str]] = []  # (operation, idempotency key or reference)
        self.requests: list[object] = []  # the request objects of charge, capture, refund

    @property
    def name(self) -> str:
        return self._name

    def script(self, operation: str, *answers: object) -> ScriptedProvider:
        """Append ``answers`` to what ``operation`` answers next."""
        self._answers[operation].extend(answers)
        return self

    def called(self, operation: str) -> list[str]:
        """The keys ``operation`` was called with, in order."""
        return [key for op, key in self.calls if op == operation]

    @property
    def unanswered(self) -> dict[str, int]:
        """Scripted answers nobody asked for, by operation (a test may expect none)."""
        return {op: len(answers) for op, answers in self._answers.items() if answers}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        self.requests.append(request)
        return await self._answer("charge", request.attempt_key, request)

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        return await self._answer("charge_status", attempt_key, attempt_key)

    async def charge_by_reference(self, provider_reference: str) -> ChargeOutcome | None:
        return await self._answer("charge_by_reference", provider_reference, provider_reference)

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        self.requests.append(request)
        return await self._answer("capture", request.capture_key, request)

    async def close_charge(self, attempt_key: str) -> ChargeOutcome | None:
        return await self._answer("close_charge", attempt_key, attempt_key)

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        self.requests.append(request)
        return await self._answer("cancel", request.cancel_key, request)

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        self.requests.append(request)
        return await self._answer("refund", request.refund_key, request)

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
        return await self._answer("refund_status", refund_key, (refund_key, charge_reference))

    async def _answer(self, operation: str, key: str, request: object) -> Any:
        self.calls.append((operation, key))
        answers = self._answers[operation]
        if not answers:
            raise AssertionError(f"unexpected provider call: {operation}({key})")
        answer = answers.popleft()
        if callable(answer) and not isinstance(answer, type):
            answer = answer(request)
            if inspect.isawaitable(answer):
                answer = await answer
        if isinstance(answer, BaseException):
            raise answer
        return answer
