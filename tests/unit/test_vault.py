"""The vault's rules on in-memory rows: what opens, what is refused with which code, and
how keys rotate, re-wrap and retire."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest

from domain.accounts import Account, AccountType
from domain.errors import ErrorCode, PaygateError
from domain.vaulted import is_token
from tests.support.builders import PAYEE_IBAN, SUCCESS_CARD
from tests.support.clock import Clock
from tests.support.fake_vault_rows import FakeVaultRows
from tests.support.vault_keys import FINGERPRINT_KEY, KEK_1, KEK_1_WRONG, KEK_2
from vault.kek import KeyFormatError, LocalKeyEncryptionKeys, parse_keys
from vault.rows import EntryRow, KeyRow
from vault.vault import KeyInUseError, NoSuchKeyError, Vault

pytestmark = pytest.mark.unit

CARD = Account(AccountType.CARD, SUCCESS_CARD, "Ada Lovelace")


def vault_of(rows: FakeVaultRows, keks: str = KEK_1, clock: Clock | None = None) -> Vault:
    return Vault(
        rows,
        LocalKeyEncryptionKeys.from_text(keks),
        FINGERPRINT_KEY,
        clock=clock or Clock(),
        primary_refresh_s=0.0,
    )


async def refused(code: ErrorCode, work: object) -> PaygateError:
    with pytest.raises(PaygateError) as caught:
        await work  # type: ignore[misc]
    assert caught.value.code is code
    for number in (SUCCESS_CARD, PAYEE_IBAN):
        assert number not in caught.value.message
    return caught.value


async def test_a_number_is_tokenized_and_revealed_only_in_its_clients_scope() -> None:
    rows = FakeVaultRows()
    vault = vault_of(rows)
    vaulted = await vault.tokenize(CARD, client_id="acme")
    assert is_token(vaulted.token)
    assert vaulted.ref(b"ignored") == CARD.ref(FINGERPRINT_KEY)
    assert (vaulted.holder_name, str(vaulted)) == ("Ada Lovelace", "card ****4242")
    assert await vault.reveal(vaulted, client_id="acme") == CARD
    [entry] = rows.entries.values()
    assert SUCCESS_CARD.encode() not in entry.ciphertext
    # Another client, and upstream services' scope, know no such token.
    await refused(ErrorCode.PAYMENT_METHOD_NOT_FOUND, vault.reveal(vaulted, client_id="other"))
    await refused(ErrorCode.PAYMENT_METHOD_NOT_FOUND, vault.describe(vaulted.token, client_id=None))


async def test_every_value_gets_its_own_nonce() -> None:
    rows = FakeVaultRows()
    vault = vault_of(rows)
    first = await vault.tokenize(CARD, client_id=None)
    second = await vault.tokenize(CARD, client_id=None)
    assert first.token != second.token
    one, two = rows.entries[first.token].ciphertext, rows.entries[second.token].ciphertext
    assert one != two
    # Same key, different nonce: the 12 bytes after the header differ.
    header = 2 + len(rows.entries[first.token].key_id)
    assert one[:header] == two[:header]
    assert one[header : header + 12] != two[header : header + 12]


async def test_a_deleted_token_is_gone_with_its_ciphertext() -> None:
    rows = FakeVaultRows()
    vault = vault_of(rows)
    vaulted = await vault.tokenize(CARD, client_id="acme")
    assert not await vault.delete(vaulted.token, client_id="other")
    assert await vault.delete(vaulted.token, client_id="acme")
    assert rows.entries == {}
    await refused(ErrorCode.PAYMENT_METHOD_NOT_FOUND, vault.reveal(vaulted, client_id="acme"))


async def test_deleting_a_client_shreds_its_tokens_only() -> None:
    rows = FakeVaultRows()
    vault = vault_of(rows)
    gone = [await vault.tokenize(CARD, client_id="acme") for _ in range(2)]
    kept = await vault.tokenize(CARD, client_id="other")
    assert await vault.delete_client("acme") == 2
    for vaulted in gone:
        await refused(ErrorCode.PAYMENT_METHOD_NOT_FOUND, vault.reveal(vaulted, client_id="acme"))
    assert await vault.reveal(kept, client_id="other") == CARD


@pytest.mark.parametrize(
    "alter",
    [
        pytest.param(lambda c: c[:-1] + bytes([c[-1] ^ 1]), id="tag"),
        pytest.param(lambda c: c[:-20] + bytes([c[-20] ^ 1]) + c[-19:], id="body"),
        pytest.param(lambda c: c[:2] + b"dk_0000000000000000" + c[21:], id="key-id"),
        pytest.param(lambda c: b"\x02" + c[1:], id="version"),
        pytest.param(lambda c: c[:10], id="truncated"),
    ],
)
async def test_a_tampered_ciphertext_is_refused(alter: object) -> None:
    rows = FakeVaultRows()
    vault = vault_of(rows)
    vaulted = await vault.tokenize(CARD, client_id="acme")
    entry = rows.entries[vaulted.token]
    rows.entries[vaulted.token] = dataclasses.replace(
        entry,
        ciphertext=alter(entry.ciphertext),  # type: ignore[operator]
    )
    await refused(ErrorCode.ACCOUNT_DATA_TAMPERED, vault.reveal(vaulted, client_id="acme"))


async def test_a_ciphertext_moved_to_another_token_does_not_open() -> None:
    rows = FakeVaultRows()
    vault = vault_of(rows)
    victim = await vault.tokenize(CARD, client_id="acme")
    attacker = await vault.tokenize(Account(AccountType.IBAN, PAYEE_IBAN), client_id="mallory")
    stolen = rows.entries[victim.token].ciphertext
    rows.entries[attacker.token] = dataclasses.replace(
        rows.entries[attacker.token], ciphertext=stolen
    )
    await refused(ErrorCode.ACCOUNT_DATA_TAMPERED, vault.reveal(attacker, client_id="mallory"))


async def test_an_unknown_data_key_or_key_encryption_key_is_named() -> None:
    rows = FakeVaultRows()
    vaulted = await vault_of(rows).tokenize(CARD, client_id="acme")
    [key_id] = rows.keys_by_id
    # Another process, whose configuration lacks the key-encryption key.
    error = await refused(
        ErrorCode.ENCRYPTION_KEY_UNKNOWN, vault_of(rows, KEK_2).reveal(vaulted, client_id="acme")
    )
    assert "'kek-1'" in error.message
    # The data key's row is gone (restored from an older backup, say).
    del rows.keys_by_id[key_id]
    error = await refused(
        ErrorCode.ENCRYPTION_KEY_UNKNOWN, vault_of(rows).reveal(vaulted, client_id="acme")
    )
    assert key_id in error.message


async def test_a_wrong_key_under_a_known_id_is_a_mismatch() -> None:
    rows = FakeVaultRows()
    vaulted = await vault_of(rows).tokenize(CARD, client_id="acme")
    await refused(
        ErrorCode.ENCRYPTION_KEY_MISMATCH,
        vault_of(rows, KEK_1_WRONG).reveal(vaulted, client_id="acme"),
    )


async def test_rotate_rewrap_retire() -> None:
    rows = FakeVaultRows()
    clock = Clock()
    vault = vault_of(rows, clock=clock)
    old = await vault.tokenize(CARD, client_id="acme")
    [first] = await vault.keys()
    clock.now += timedelta(seconds=1)
    second = await vault.rotate()
    new = await vault.tokenize(CARD, client_id="acme")
    assert rows.entries[new.token].key_id == second.key_id
    assert rows.entries[old.token].key_id == first.key_id
    # Both open meanwhile: no downtime.
    assert await vault.reveal(old, client_id="acme") == CARD
    with pytest.raises(KeyInUseError, match="rewrap"):
        await vault.retire(first.key_id)
    with pytest.raises(KeyInUseError, match="newest"):
        await vault.retire(second.key_id)
    with pytest.raises(NoSuchKeyError):
        await vault.retire("dk_none")

    report = await vault.rewrap()
    assert (report.keys_rewrapped, report.values_moved, report.values_failed) == (0, 1, 0)
    assert {e.key_id for e in rows.entries.values()} == {second.key_id}
    retired = await vault.retire(first.key_id)
    assert not retired.active
    assert rows.keys_by_id[first.key_id].wrapped_key is None
    assert await vault.reveal(old, client_id="acme") == CARD
    assert [(k.key_id, k.values) for k in await vault.keys()] == [
        (first.key_id, 0),
        (second.key_id, 2),
    ]


async def test_a_key_encryption_key_rotates_by_rewrap() -> None:
    rows = FakeVaultRows()
    vaulted = await vault_of(rows, KEK_1).tokenize(CARD, client_id="acme")
    # The new key first, the old one kept for unwrapping until the rewrap is done.
    report = await vault_of(rows, f"{KEK_2}\n{KEK_1}").rewrap()
    assert (report.keys_rewrapped, report.values_moved) == (1, 0)
    assert {k.kek_id for k in rows.keys_by_id.values()} == {"kek-2"}
    assert await vault_of(rows, KEK_2).reveal(vaulted, client_id="acme") == CARD


async def test_rewrap_counts_and_leaves_a_value_that_does_not_open() -> None:
    rows = FakeVaultRows()
    clock = Clock()
    vault = vault_of(rows, clock=clock)
    broken = await vault.tokenize(CARD, client_id="acme")
    entry = rows.entries[broken.token]
    rows.entries[broken.token] = dataclasses.replace(
        entry, ciphertext=entry.ciphertext[:-1] + bytes([entry.ciphertext[-1] ^ 1])
    )
    clock.now += timedelta(seconds=1)
    await vault.rotate()
    report = await vault.rewrap()
    assert (report.values_moved, report.values_failed) == (0, 1)
    assert rows.entries[broken.token].key_id == entry.key_id


async def test_tokens_made_for_one_payment_expire_unless_saved() -> None:
    rows = FakeVaultRows()
    clock = Clock()
    vault = vault_of(rows, clock=clock)
    once = await vault.tokenize(CARD, client_id="acme", expires_in=timedelta(days=30))
    saved = await vault.tokenize(CARD, client_id="acme", saved=True, expires_in=timedelta(days=30))
    clock.now += timedelta(days=29)
    assert await vault.delete_expired() == 0
    clock.now += timedelta(days=1)
    # Expired is not found even before the job ran; the job then shreds it.
    await refused(ErrorCode.PAYMENT_METHOD_NOT_FOUND, vault.reveal(once, client_id="acme"))
    assert await vault.delete_expired() == 1
    assert set(rows.entries) == {saved.token}


@pytest.mark.parametrize(
    "text",
    ["", "kek-1", "kek-1:" + "1" * 63, "kek 1:" + "11" * 32, "11" * 32, f"{KEK_1},kek-2:zz"],
)
def test_malformed_key_encryption_keys_are_refused_without_showing_them(text: str) -> None:
    with pytest.raises(KeyFormatError) as caught:
        LocalKeyEncryptionKeys.from_text(text)
    assert "11" * 8 not in str(caught.value)


def test_keys_are_read_in_order_the_first_is_current() -> None:
    assert [k for k, _ in parse_keys(f" {KEK_2} ,\n{KEK_1}\n\n")] == ["kek-2", "kek-1"]
    assert LocalKeyEncryptionKeys.from_text(f"{KEK_2},{KEK_1}").current_id == "kek-2"


class _SuspendingRows(FakeVaultRows):
    """Rows that suspend in their reads and writes, as a database does, counting key reads."""

    def __init__(self) -> None:
        super().__init__()
        self.key_reads = 0

    async def newest_active_key(self) -> KeyRow | None:
        self.key_reads += 1
        await asyncio.sleep(0)
        return await super().newest_active_key()

    async def add_key(self, key: KeyRow) -> None:
        await asyncio.sleep(0)
        await super().add_key(key)


async def test_concurrent_tokenizations_share_one_read_of_the_newest_key() -> None:
    rows = _SuspendingRows()
    vault = Vault(rows, LocalKeyEncryptionKeys.from_text(KEK_1), FINGERPRINT_KEY, clock=Clock())
    # A fresh vault, twenty payments at once: one data key is made, not twenty.
    vaulted = await asyncio.gather(*(vault.tokenize(CARD, client_id=None) for _ in range(20)))
    assert len(rows.keys_by_id) == 1
    assert rows.key_reads == 1
    assert {entry.key_id for entry in rows.entries.values()} == set(rows.keys_by_id)
    for account in vaulted:
        assert await vault.reveal(account, client_id=None) == CARD
    # Later tokenizations within the refresh interval read no key at all.
    await asyncio.gather(*(vault.tokenize(CARD, client_id=None) for _ in range(5)))
    assert rows.key_reads == 1


async def test_a_key_is_not_retired_while_a_process_may_still_encrypt_under_it() -> None:
    """rotate, rewrap and retire in one go: a service that read the old key as the newest
    just before the rotation keeps tokenizing under it for up to its refresh interval. A
    retire then would pass the "no value under it" check and erase the key those new
    values need, so they would never open again."""
    rows, clock = FakeVaultRows(), Clock()

    def vault(refresh_s: float) -> Vault:
        keks = LocalKeyEncryptionKeys.from_text(KEK_1)
        return Vault(rows, keks, FINGERPRINT_KEY, clock=clock, primary_refresh_s=refresh_s)

    service, operator = vault(30.0), vault(30.0)
    await service.tokenize(CARD, client_id="acme")  # reads the first key as the newest
    [first] = await operator.keys()
    clock.now += timedelta(seconds=1)
    await operator.rotate()
    assert (await operator.rewrap()).values_moved == 1
    late = await service.tokenize(CARD, client_id="acme")  # still under the first key
    assert rows.entries[late.token].key_id == first.key_id

    with pytest.raises(KeyInUseError, match="may encrypt under it until"):
        await operator.retire(first.key_id)
    clock.now += timedelta(seconds=60)  # twice the refresh interval after the rotation
    with pytest.raises(KeyInUseError, match="run rewrap first"):
        await operator.retire(first.key_id)  # the late value is still under it
    assert (await operator.rewrap()).values_moved == 1
    assert not (await operator.retire(first.key_id)).active
    assert await vault(30.0).reveal(late, client_id="acme") == CARD


async def test_a_seal_refused_for_a_retired_key_is_made_again_once_then_an_error() -> None:
    # The rows refuse a value whose data key was retired before its insert
    # (tests/integration/test_vault_retire_race.py): the vault seals it again under the
    # newest key, read afresh, and gives up with encryption_key_unknown if refused again.
    class RetiringRows(FakeVaultRows):
        def __init__(self, retirements: int) -> None:
            super().__init__()
            self.retirements = retirements

        async def add_entry(self, entry: EntryRow) -> None:
            if self.retirements:  # the key is retired, and a successor made, meanwhile
                self.retirements -= 1
                await self.retire_key(entry.key_id, clock.now)
                clock.now += timedelta(seconds=1)
                await vault_of(self, clock=clock).rotate()
            await super().add_entry(entry)

    clock = Clock()
    rows = RetiringRows(retirements=1)
    vault = vault_of(rows, clock=clock)
    saved = await vault.tokenize(CARD, client_id="acme", saved=True)
    [entry] = rows.entries.values()
    assert entry.token == saved.token
    assert rows.keys_by_id[entry.key_id].wrapped_key is not None
    assert await vault_of(rows, clock=clock).reveal(saved, client_id="acme") == CARD

    rows = RetiringRows(retirements=2)
    await refused(
        ErrorCode.ENCRYPTION_KEY_UNKNOWN,
        vault_of(rows, clock=clock).tokenize(CARD, client_id="acme", saved=True),
    )
    assert rows.entries == {}
