"""The facade looks up only the tokens a command names: clear numbers on both sides cost
no vault call (and no task), a token on one side one call for that side."""

from __future__ import annotations

import dataclasses
from typing import Any

from domain.accounts import AccountType
from domain.vaulted import AccountToken, VaultedAccount
from http_facade.account_vaulting import tokens_resolved
from tests.support.builders import create_payment


class RecordingVault:
    """Records every token it is asked to check; answers a vaulted account for each."""

    def __init__(self) -> None:
        self.checked: list[str] = []

    async def check_opens(self, token, *, client_id, holder_name=None):
        self.checked.append(token)
        return VaultedAccount(AccountType.CARD, token, "411111******1111", "fp", holder_name)

    async def tokenize(self, *args, **kwargs):
        raise AssertionError("resolving tokens writes nothing")


async def test_clear_numbers_on_both_sides_ask_the_vault_nothing() -> None:
    # Only what resolving tokens may call; the rest of the vault port is not needed.
    vault: Any = RecordingVault()
    command = dataclasses.replace(create_payment(), client_id="acme")

    resolved = await tokens_resolved(vault, command)

    assert resolved is command
    assert vault.checked == []


async def test_a_token_on_one_side_is_checked_and_the_other_side_kept() -> None:
    # Only what resolving tokens may call; the rest of the vault port is not needed.
    vault: Any = RecordingVault()
    command = dataclasses.replace(
        create_payment(), payer=AccountToken(AccountType.CARD, "tok_1", "Ada"), client_id="acme"
    )

    resolved = await tokens_resolved(vault, command)

    assert vault.checked == ["tok_1"]
    assert isinstance(resolved.payer, VaultedAccount)
    assert resolved.payer.holder_name == "Ada"
    assert resolved.payee == command.payee
