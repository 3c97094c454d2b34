"""The accounts of a REST payment, in the vault before the command is published.

Invariant: the facade publishes no account number. A number in a request body is vaulted
(a token not saved for reuse: the retention shreds it) just before the command is published,
and the command carries the token; a token in the body is looked up in the client's scope
and checked to decrypt first, so a deleted or broken one is answered 4xx and nothing is
published.

Payer and payee are vaulted (or checked) at once, not one after the other: the vault's rows
go through the database's writer queue, which commits concurrent inserts together, so a
request costs one write transaction (one commit, one sync on SQLite) instead of two.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from aiohttp import web

from domain.accounts import Account
from domain.payments import CreatePayment
from domain.vaulted import AccountToken, AnyAccount
from http_facade.ports import PaymentMethodVault
from http_facade.state import TOKEN_RETENTION, VAULT


async def with_tokens_resolved(request: web.Request, command: CreatePayment) -> CreatePayment:
    """``command`` with each token it names checked in the client's scope (no writes)."""
    return await tokens_resolved(request.app[VAULT], command)


async def with_numbers_vaulted(request: web.Request, command: CreatePayment) -> CreatePayment:
    """``command`` with every clear account replaced by a new token of the client's."""
    return await numbers_vaulted(
        request.app[VAULT], command, retention=request.app[TOKEN_RETENTION]
    )


async def tokens_resolved(vault: PaymentMethodVault, command: CreatePayment) -> CreatePayment:
    if not isinstance(command.payer, AccountToken) and not isinstance(command.payee, AccountToken):
        # The common case, clear numbers on both sides: gather would start two tasks per
        # request only to return the accounts as they are.
        return command

    async def resolved(account: AnyAccount) -> AnyAccount:
        if not isinstance(account, AccountToken):
            return account
        return await vault.check_opens(
            account.token, client_id=command.client_id, holder_name=account.holder_name
        )

    payer, payee = await asyncio.gather(resolved(command.payer), resolved(command.payee))
    return dataclasses.replace(command, payer=payer, payee=payee)


async def numbers_vaulted(
    vault: PaymentMethodVault, command: CreatePayment, *, retention: timedelta
) -> CreatePayment:
    async def vaulted(account: AnyAccount) -> AnyAccount:
        if not isinstance(account, Account):
            return account
        return await vault.tokenize(account, client_id=command.client_id, expires_in=retention)

    payer, payee = await asyncio.gather(vaulted(command.payer), vaulted(command.payee))
    return dataclasses.replace(command, payer=payer, payee=payee)
