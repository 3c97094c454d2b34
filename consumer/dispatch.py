"""Sends each decoded command to the handler of its kind."""

from __future__ import annotations

from consumer.capture_handler import CaptureCommandHandler
from consumer.outcome_recorder import Outcome
from consumer.payment_handler import PaymentCommandHandler
from consumer.refund_handler import RefundCommandHandler
from domain.captures import CapturePayment
from domain.commands import CreatePayment
from schemas.payments import Command


class CommandDispatcher:
    def __init__(
        self,
        payments: PaymentCommandHandler,
        refunds: RefundCommandHandler,
        captures: CaptureCommandHandler,
    ) -> None:
        self._payments = payments
        self._refunds = refunds
        self._captures = captures

    async def handle(self, command: Command) -> Outcome:
        if isinstance(command, CreatePayment):
            return await self._payments.handle(command)
        if isinstance(command, CapturePayment):
            return await self._captures.handle(command)
        return await self._refunds.handle(command)
