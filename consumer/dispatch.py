"""Sends each decoded command to the handler of its kind, through one table: a new kind of
command is one more entry here (and a handler), never another branch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from consumer.account_intake import PaymentHandling
from consumer.cancel_handler import CancelCommandHandler
from consumer.capture_handler import CaptureCommandHandler
from consumer.outcome import Outcome
from consumer.refund_handler import RefundCommandHandler
from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from domain.payments import CreatePayment
from domain.refunds import RefundPayment
from schemas.payments import Command


class CommandDispatcher:
    def __init__(
        self,
        payments: PaymentHandling,
        refunds: RefundCommandHandler,
        captures: CaptureCommandHandler,
        cancels: CancelCommandHandler,
    ) -> None:
        self._handlers: Mapping[type, Callable[[Any], Awaitable[Outcome]]] = {
            CreatePayment: payments.handle,
            RefundPayment: refunds.handle,
            CapturePayment: captures.handle,
            CancelPayment: cancels.handle,
        }

    async def handle(self, command: Command) -> Outcome:
        handler = self._handlers.get(type(command))
        if handler is None:  # a schema decoded into a command nobody handles: a bug
            raise TypeError(f"no handler for {type(command).__name__}")
        return await handler(command)
