"""The accounts of a REST payment, in the vault before the command is published.

Invariant: the facade publishes no account number. A number in a request body is vaulted
(a token not saved for reuse: the retention shreds it) just before the command is published,
and the command carries the token; a token in the body is looked up in the client's scope
and checked to decrypt first, so a deleted or broken one is answered 4xx and nothing is
published.
"""

from __future__ import annotations

import dataclasses

from aiohttp import web

from domain.accounts import Account
from domain.payments import CreatePayment
from domain.vaulted import AccountToken, AnyAccount
from http_facade.state import TOKEN_RETENTION, VAULT


async def with_tokens_resolved(request: web.Request, command: CreatePayment) -> CreatePayment:
    """``command`` with each token it names checked in the client's scope (no writes)."""
    vault = request.app[VAULT]

    async def resolved(account: AnyAccount) -> AnyAccount:
        if not isinstance(account, AccountToken):
            return account
        return await vault.check_opens(
            account.token, client_id=command.client_id, holder_name=account.holder_name
        )

    return dataclasses.replace(
        command, payer=await resolved(command.payer), payee=await resolved(command.payee)
    )


async def with_numbers_vaulted(request: web.Request, command: CreatePayment) -> CreatePayment:
    """``command`` with every clear account replaced by a new token of the client's."""
    vault = request.app[VAULT]
    retention = request.app[TOKEN_RETENTION]

    async def vaulted(account: AnyAccount) -> AnyAccount:
        if not isinstance(account, Account):
            return account
        return await vault.tokenize(account, client_id=command.client_id, expires_in=retention)

    return dataclasses.replace(
        command, payer=await vaulted(command.payer), payee=await vaulted(command.payee)
    )
