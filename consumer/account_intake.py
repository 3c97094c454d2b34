"""A payment command's accounts, made vaulted before anything about the payment is written.

Invariant: the payment handler only ever sees :class:`domain.vaulted.VaultedAccount`s. So
nothing the consumer stores (the payment row, the sealed attempt), logs or publishes (result
events, dead letters) can hold a number: that is known here, once, for every intake form:

| the command names the account by | intake                                                 |
| -------------------------------- | ------------------------------------------------------ |
| a token (``pm_...``)             | looked up in the client's scope and checked to decrypt |
| a number encrypted to paygate    | decrypted with paygate's private key, vaulted          |
| a clear number                   | vaulted, only where clear numbers are accepted         |

Every refusal is a catalogue error that is not retryable, so the record handling
dead-letters the command at once with its code, and no provider is ever called for it.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Protocol

from consumer.outcome import Outcome
from domain.accounts import Account
from domain.errors import ErrorCode, PaygateError
from domain.payments import CreatePayment
from domain.vaulted import AccountToken, AnyAccount, EncryptedAccount, VaultedAccount


class AccountVault(Protocol):
    async def tokenize(
        self,
        account: Account,
        *,
        client_id: str | None,
        saved: bool = False,
        expires_in: timedelta | None = None,
    ) -> VaultedAccount: ...

    async def check_opens(
        self, token: str, *, client_id: str | None, holder_name: str | None = None
    ) -> VaultedAccount: ...


class AccountDecrypter(Protocol):
    def decrypt(self, account: EncryptedAccount) -> Account: ...


class PaymentHandling(Protocol):
    async def handle(self, command: CreatePayment) -> Outcome: ...


class AccountIntake:
    def __init__(
        self,
        vault: AccountVault,
        decrypter: AccountDecrypter,
        *,
        accept_clear: bool,
        retention: timedelta,
    ) -> None:
        self._vault = vault
        self._decrypter = decrypter
        self._accept_clear = accept_clear
        self._retention = retention

    async def admit(self, command: CreatePayment) -> CreatePayment:
        """``command`` with both accounts vaulted, or a catalogue error."""
        client = command.client_id
        payer = await self._vaulted(command.payer, client, "payerAccount")
        payee = await self._vaulted(command.payee, client, "payeeAccount")
        return dataclasses.replace(command, payer=payer, payee=payee)

    async def _vaulted(
        self, account: AnyAccount, client_id: str | None, param: str
    ) -> VaultedAccount:
        if isinstance(account, VaultedAccount):
            return account
        if isinstance(account, AccountToken):
            return await self._vault.check_opens(
                account.token, client_id=client_id, holder_name=account.holder_name
            )
        if isinstance(account, EncryptedAccount):
            clear = self._decrypter.decrypt(account)
        else:
            if not self._accept_clear:
                raise PaygateError(
                    ErrorCode.INVALID_REQUEST,
                    "clear account numbers are not accepted on Kafka: send a token "
                    "(POST /v1/payment_methods) or the number encrypted to paygate's key",
                    param=f"{param}.number",
                )
            clear = account
        # Vaulted at first read; a redelivery vaults it again under another token, and the
        # retention shreds whichever is not used.
        return await self._vault.tokenize(clear, client_id=client_id, expires_in=self._retention)


class AdmittedPayments:
    """The payment handler behind the intake: what the dispatcher calls for CreatePayment."""

    def __init__(self, intake: AccountIntake, payments: PaymentHandling) -> None:
        self._intake = intake
        self._payments = payments

    async def handle(self, command: CreatePayment) -> Outcome:
        return await self._payments.handle(await self._intake.admit(command))
