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

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Protocol, TypeVar

from consumer.outcome import Outcome
from domain.accounts import Account
from domain.errors import ErrorCode, PaygateError
from domain.payments import CreatePayment
from domain.vaulted import AccountToken, AnyAccount, EncryptedAccount, VaultedAccount
from persistence.group_commit import Bulk
from persistence.vault_key_guard import KeyRetiredError

# A begin refused because a new token's data key was retired meanwhile is admitted again
# under the newest key; a second refusal (another retire meanwhile) is an error, not a loop.
_ADMISSIONS = 2

_In = TypeVar("_In")
_Out = TypeVar("_Out")


class AccountVault(Protocol):
    async def tokenize(
        self,
        account: Account,
        *,
        client_id: str | None,
        saved: bool = False,
        expires_in: timedelta | None = None,
    ) -> VaultedAccount: ...

    async def tokenize_along(
        self, account: Account, *, client_id: str | None, expires_in: timedelta
    ) -> tuple[VaultedAccount, Bulk | None]: ...

    async def check_opens(
        self, token: str, *, client_id: str | None, holder_name: str | None = None
    ) -> VaultedAccount: ...

    async def newest_key_id(self) -> str: ...


class AccountDecrypter(Protocol):
    def decrypt(self, account: EncryptedAccount) -> Account: ...


class PaymentHandling(Protocol):
    async def handle(self, command: CreatePayment) -> Outcome: ...


class PaymentBeginning(Protocol):
    """The payment handler (consumer.payment_handler): ``along`` commits with its begin."""

    async def handle(self, command: CreatePayment, along: Sequence[Bulk] = ()) -> Outcome: ...


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

    async def admit_along(self, command: CreatePayment) -> tuple[CreatePayment, tuple[Bulk, ...]]:
        """``command`` with both accounts vaulted, or a catalogue error; and the writes of
        the vault rows of its clear numbers, which are not written here but returned, for
        the payment's begin to commit with the payment (PaymentStore.begin's ``along``).
        Until then the command's new tokens name nothing, so the command must go to nothing
        but that begin. A begin that finds the payment already begun (a redelivery) writes
        none of them: its tokens never name anything, and the shred check their writes make
        is not needed, as no card of the client is stored for it.

        Everything that can refuse the command (a clear number where none is accepted, an
        encrypted one that does not open, a token not found) is decided before any write is
        made, so a refused command vaults nothing.
        """
        client = command.client_id
        payer = self._readable(command.payer, "payerAccount")
        payee = self._readable(command.payee, "payeeAccount")
        checked = await _both(
            lambda account: self._checked(account, client),
            (payer, payee),
            together=isinstance(payer, AccountToken) and isinstance(payee, AccountToken),
        )
        # One after the other: each only builds its row's write (the begin runs them), so a
        # gather would cost a task per account with nothing to overlap.
        stored = (await self._stored(checked[0], client), await self._stored(checked[1], client))
        writes = tuple(write for _, write in stored if write is not None)
        return dataclasses.replace(command, payer=stored[0][0], payee=stored[1][0]), writes

    async def read_newest_key(self) -> None:
        """Read the vault's newest data key now: the next admission seals under it."""
        await self._vault.newest_key_id()

    def _readable(self, account: AnyAccount, param: str) -> VaultedAccount | AccountToken | Account:
        """A vaulted account, a token to check, or the clear account to vault."""
        if isinstance(account, VaultedAccount | AccountToken):
            return account
        if isinstance(account, EncryptedAccount):
            return self._decrypter.decrypt(account)
        if not self._accept_clear:
            raise PaygateError(
                ErrorCode.INVALID_REQUEST,
                "clear account numbers are not accepted on Kafka: send a token "
                "(POST /v1/payment_methods) or the number encrypted to paygate's key",
                param=f"{param}.number",
            )
        return account

    async def _checked(
        self, account: VaultedAccount | AccountToken | Account, client_id: str | None
    ) -> VaultedAccount | Account:
        if not isinstance(account, AccountToken):
            return account
        return await self._vault.check_opens(
            account.token, client_id=client_id, holder_name=account.holder_name
        )

    async def _stored(
        self, account: VaultedAccount | Account, client_id: str | None
    ) -> tuple[VaultedAccount, Bulk | None]:
        if isinstance(account, VaultedAccount):
            return account, None
        # Vaulted at first read; a redelivery vaults it again under another token, and the
        # retention shreds whichever is not used.
        return await self._vault.tokenize_along(
            account, client_id=client_id, expires_in=self._retention
        )


async def _both(
    work: Callable[[_In], Awaitable[_Out]], pair: tuple[_In, _In], *, together: bool
) -> tuple[_Out, _Out]:
    """``work`` on both, concurrently when both go to the vault (``together``): a gather
    costs a task per account, which an account with nothing to look up need not pay."""
    first, second = pair
    if together:
        one, two = await asyncio.gather(work(first), work(second))
        return one, two
    return await work(first), await work(second)


class AdmittedPayments:
    """The payment handler behind the intake: what the dispatcher calls for CreatePayment."""

    def __init__(self, intake: AccountIntake, payments: PaymentBeginning) -> None:
        self._intake = intake
        self._payments = payments

    async def handle(self, command: CreatePayment) -> Outcome:
        # The vault rows commit with the payment's begin: one trip through the writer
        # queue per payment less than writing them first (see docs/performance.md).
        for _ in range(_ADMISSIONS):
            admitted, along = await self._intake.admit_along(command)
            try:
                return await self._payments.handle(admitted, along)
            except KeyRetiredError as refused:
                # A new token was sealed under a data key retired before the begin landed
                # (a begin held past the retire: a backed-up writer queue, a stalled
                # database). The begin wrote nothing: admitted again, under the newest key
                # read now, rather than a payment whose number never opens again.
                retired = refused
                await self._intake.read_newest_key()
        raise PaygateError(
            ErrorCode.ENCRYPTION_KEY_UNKNOWN,
            f"no data key with id {', '.join(retired.key_ids)!r}: retired while the "
            "payment's accounts were being vaulted",
        )
