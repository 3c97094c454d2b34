"""The consumer's account intake and dead-letter redaction: every intake form ends as a
vault token, or as a refusal with its catalogue code; no dead letter keeps a number."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from consumer.account_intake import AccountDecrypter, AccountIntake, AdmittedPayments
from consumer.dead_letter_redaction import DeadLetterRedaction, mask_numbers_in
from consumer.outcome import Outcome
from consumer.sealing import CommandSealer
from domain.account_numbers import holds_account_number, scrub
from domain.accounts import Account, AccountType
from domain.errors import ErrorCode, PaygateError
from domain.payments import CreatePayment
from domain.vaulted import AccountToken, EncryptedAccount, VaultedAccount
from persistence.vault_key_guard import KeyRetiredError
from producer.account_encryption import encrypt_account_number
from schemas.codec import CREATE_PAYMENT
from schemas.payments import PaymentMessages
from tests.support.builders import PAYEE_IBAN, SUCCESS_CARD, create_payment, create_payment_record
from tests.support.fake_vault_rows import FakeVaultRows
from tests.support.intake import admit_and_write
from tests.support.memory_vault import memory_vault
from vault.account_key_pair import AccountKeyPair

pytestmark = pytest.mark.unit

KEY = b"k" * 32
RETENTION = timedelta(days=30)


# Where each generated key pair's file is, by key id.
KEY_FILES: dict[str, Path] = {}


@pytest.fixture(scope="module")
def key_pair(tmp_path_factory: pytest.TempPathFactory) -> AccountKeyPair:
    path = tmp_path_factory.mktemp("keys") / "account.pem"
    pair = AccountKeyPair.from_files([path], generate_missing=True)
    KEY_FILES[pair.published.key_id] = path
    return pair


def intake(rows: FakeVaultRows, key_pair: AccountDecrypter, *, accept_clear: bool) -> AccountIntake:
    return AccountIntake(
        memory_vault(KEY, rows), key_pair, accept_clear=accept_clear, retention=RETENTION
    )


def encrypted(key_pair: AccountKeyPair, number: str, type_: str = "card") -> EncryptedAccount:
    record = encrypt_account_number(key_pair.published.public_key_pem.encode(), type_, number)
    return EncryptedAccount(
        AccountType(type_),
        str(record["keyId"]),
        record["wrappedKey"],  # type: ignore[arg-type]
        record["nonce"],  # type: ignore[arg-type]
        record["ciphertext"],  # type: ignore[arg-type]
    )


async def refused(code: ErrorCode, work: Any) -> None:
    with pytest.raises(PaygateError) as caught:
        await work
    assert caught.value.code is code
    assert SUCCESS_CARD not in caught.value.message


async def test_clear_numbers_are_vaulted_only_where_accepted(key_pair: AccountKeyPair) -> None:
    rows = FakeVaultRows()
    command = create_payment()
    await refused(
        ErrorCode.INVALID_REQUEST,
        admit_and_write(intake(rows, key_pair, accept_clear=False), command),
    )
    assert rows.entries == {}
    admitted = await admit_and_write(intake(rows, key_pair, accept_clear=True), command)
    assert isinstance(admitted.payer, VaultedAccount)
    assert isinstance(admitted.payee, VaultedAccount)
    assert admitted.payer.ref(b"") == command.payer.ref(KEY)
    # Same parameters as the clear command: replays and conflicts are judged alike.
    assert admitted.parameters_fingerprint(KEY) == command.parameters_fingerprint(KEY)
    assert all(e.expires_at is not None for e in rows.entries.values())


async def test_an_encrypted_number_is_decrypted_into_the_vault(key_pair: AccountKeyPair) -> None:
    rows = FakeVaultRows()
    command = dataclasses.replace(
        create_payment(),
        payer=encrypted(key_pair, SUCCESS_CARD),
        payee=encrypted(key_pair, PAYEE_IBAN, "iban"),
    )
    admitted = await admit_and_write(intake(rows, key_pair, accept_clear=False), command)
    assert isinstance(admitted.payer, VaultedAccount)
    assert admitted.payer.masked == "****4242"
    vault = memory_vault(KEY, rows)
    assert await vault.reveal(admitted.payer, client_id=None) == Account(
        AccountType.CARD, SUCCESS_CARD
    )


@pytest.mark.parametrize(
    ("alter", "code"),
    [
        (
            lambda e: dataclasses.replace(e, key_id="ak_0000000000000000"),
            ErrorCode.ENCRYPTION_KEY_UNKNOWN,
        ),
        (
            lambda e: dataclasses.replace(
                e, wrapped_key=bytes([e.wrapped_key[0] ^ 1]) + e.wrapped_key[1:]
            ),
            ErrorCode.ENCRYPTION_KEY_MISMATCH,
        ),
        (
            lambda e: dataclasses.replace(
                e, ciphertext=e.ciphertext[:-1] + bytes([e.ciphertext[-1] ^ 1])
            ),
            ErrorCode.ACCOUNT_DATA_TAMPERED,
        ),
        # Relabelled as another account type: bound as associated data.
        (lambda e: dataclasses.replace(e, type=AccountType.IBAN), ErrorCode.ACCOUNT_DATA_TAMPERED),
    ],
)
async def test_a_broken_encrypted_number_is_refused(
    key_pair: AccountKeyPair, alter: Any, code: ErrorCode
) -> None:
    rows = FakeVaultRows()
    command = dataclasses.replace(create_payment(), payer=alter(encrypted(key_pair, SUCCESS_CARD)))
    await refused(code, admit_and_write(intake(rows, key_pair, accept_clear=True), command))
    assert rows.entries == {}


async def test_a_number_encrypted_to_another_key_is_a_mismatch(
    key_pair: AccountKeyPair, tmp_path: Path
) -> None:
    other = AccountKeyPair.from_files([tmp_path / "other.pem"], generate_missing=True)
    foreign = encrypted(other, SUCCESS_CARD)
    # Claiming paygate's key id: the wrapped key does not open with paygate's private key.
    command = dataclasses.replace(
        create_payment(), payer=dataclasses.replace(foreign, key_id=key_pair.published.key_id)
    )
    await refused(
        ErrorCode.ENCRYPTION_KEY_MISMATCH,
        admit_and_write(intake(FakeVaultRows(), key_pair, accept_clear=True), command),
    )


async def test_a_token_is_looked_up_in_the_commands_client_scope(key_pair: AccountKeyPair) -> None:
    rows = FakeVaultRows()
    vault = memory_vault(KEY, rows)
    mine = await vault.tokenize(Account(AccountType.CARD, SUCCESS_CARD), client_id="acme")
    command = dataclasses.replace(
        create_payment(), payer=AccountToken(AccountType.CARD, mine.token, "Ada"), client_id="acme"
    )
    admitted = await admit_and_write(
        intake(rows, key_pair, accept_clear=False),
        dataclasses.replace(
            command,
            payee=await vault.tokenize(Account(AccountType.IBAN, PAYEE_IBAN), client_id="acme"),
        ),
    )
    assert admitted.payer == dataclasses.replace(mine, holder_name="Ada")
    other_client = dataclasses.replace(command, client_id="mallory")
    await refused(
        ErrorCode.PAYMENT_METHOD_NOT_FOUND,
        admit_and_write(intake(rows, key_pair, accept_clear=True), other_client),
    )


async def test_sealed_attempts_hold_tokens_not_numbers(key_pair: AccountKeyPair) -> None:
    rows = FakeVaultRows()
    admitted = await admit_and_write(intake(rows, key_pair, accept_clear=True), create_payment())
    sealer = CommandSealer(KEY)
    sealed = sealer.seal(admitted)
    assert sealer.unseal(sealed, admitted.payment_request_id) == admitted
    # Even opened, the seal holds no number: only the vault does.
    assert SUCCESS_CARD.encode() not in sealed
    opened = sealer.unseal(sealed, admitted.payment_request_id)
    assert opened is not None
    assert isinstance(opened.payer, VaultedAccount)


async def test_a_dead_letter_with_clear_numbers_carries_tokens(key_pair: AccountKeyPair) -> None:
    rows = FakeVaultRows()
    messages = PaymentMessages.bundled()
    redact = DeadLetterRedaction(messages, memory_vault(KEY, rows), retention=RETENTION)
    # Dead-lettered for its amount, with clear numbers in it.
    from decimal import Decimal

    from schemas.codec import AvroCodec
    from schemas.registry import FileSchemaRegistry

    codec = AvroCodec(FileSchemaRegistry.bundled())
    value = codec.encode(
        CREATE_PAYMENT, create_payment_record(amount=Decimal("-1"), clientId="acme")
    )
    assert SUCCESS_CARD.encode() in value
    redacted = await redact(value)
    assert SUCCESS_CARD.encode() not in redacted
    assert PAYEE_IBAN.encode() not in redacted
    decoded = messages.command_record(redacted)
    assert decoded is not None
    _, record = decoded
    assert record["payerAccount"]["number"] is None
    token = record["payerAccount"]["token"]
    assert rows.entries[token].client_id == "acme"
    assert record["amount"] == Decimal("-1")  # everything else as it was


async def test_a_dead_letter_without_clear_numbers_is_kept_byte_for_byte() -> None:
    messages = PaymentMessages.bundled()
    rows = FakeVaultRows()
    redact = DeadLetterRedaction(messages, memory_vault(KEY, rows), retention=RETENTION)
    # An idempotency key of digits: masking it would make a re-published copy another payment.
    command = create_payment(idempotency_key="1234567890123456")
    tokenized = await admit_and_write(intake(rows, FakeKeyPair(), accept_clear=True), command)
    value = messages.encode_command(tokenized)
    assert await redact(value) == value


class FakeKeyPair:
    def decrypt(self, account: EncryptedAccount) -> Account:
        raise AssertionError("nothing encrypted here")


def test_undecodable_dead_letters_are_masked_in_place() -> None:
    raw = b"\x01garbage " + SUCCESS_CARD.encode() + b" and " + PAYEE_IBAN.encode() + b" order-12"
    masked = mask_numbers_in(raw)
    assert len(masked) == len(raw)
    assert SUCCESS_CARD.encode() not in masked
    assert PAYEE_IBAN.encode() not in masked
    assert b"************4242" in masked
    assert masked.endswith(b" order-12")


# Written with what the text detector reads between or as digits (its separators, invisible
# characters, percent-encoding, full-width digits): the old masking knew spaces and dashes.
HIDDEN_IN_BYTES = {
    "dots": "4242.4242.4242.4242",
    "slashes": "4242/4242/4242/4242",
    "two-spaces": "4242  4242  4242  4242",
    "no-break-spaces": "4242\u00a04242\u00a04242\u00a04242",
    "narrow-no-break-spaces": "4242\u202f4242\u202f4242\u202f4242",
    "zero-width-after-each-digit": "\u200b".join("4242424242424242"),
    "soft-hyphen-after-each-digit": "\u00ad".join("4242424242424242"),
    "byte-order-marks": "\ufeff".join("4242424242424242"),
    "percent-encoded-spaces": "4242%204242%204242%204242",
    "percent-encoded-digits": "%34%32" * 8,
    "full-width-digits": "\uff14\uff12" * 8,
    "iban-dots": "DE89.3704.0044.0532.0130.00",
    "iban-no-break-spaces": "DE89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000",
    "iban-small-letters": "gb82 west 1234 5698 7654 32",
}


@pytest.mark.parametrize("number", HIDDEN_IN_BYTES.values(), ids=HIDDEN_IN_BYTES)
def test_undecodable_dead_letters_mask_what_the_text_detector_reads(number: str) -> None:
    written = number.encode()
    raw = b"\x01\xffgarbage " + written + b" order-12"
    masked = mask_numbers_in(raw)
    assert len(masked) == len(raw)
    assert masked.startswith(b"\x01\xffgarbage ")
    assert masked.endswith(b" order-12")
    kept = masked[len(b"\x01\xffgarbage ") : -len(b" order-12")].decode()
    # The text detector finds nothing left of it: no more than the last four show.
    assert b"*" in masked
    assert not holds_account_number(kept)
    assert scrub(kept) == kept


def test_an_account_key_rotates_the_first_is_published_all_decrypt(
    key_pair: AccountKeyPair, tmp_path: Path
) -> None:
    old = key_pair
    new_path = tmp_path / "new.pem"
    new = AccountKeyPair.from_files([new_path], generate_missing=True)
    both = AccountKeyPair.from_files([new_path, *[tmp_path_of(old)]], generate_missing=False)
    assert both.published == new.published
    for pair in (old, new):
        account = both.decrypt(encrypted(pair, SUCCESS_CARD))
        assert account == Account(AccountType.CARD, SUCCESS_CARD)


def tmp_path_of(pair: AccountKeyPair) -> Path:
    return KEY_FILES[pair.published.key_id]


async def test_a_dead_lettered_cancel_is_kept_byte_for_byte() -> None:
    """A CancelPayment holds no account, so its dead letter must be its bytes: masking the
    digit runs of its ids would make a re-published cancel name another payment (not_found),
    and the authorization it was to release would stay held."""
    from datetime import UTC, datetime

    from domain.cancels import CancelPayment
    from domain.payments import payment_request_id_for

    messages = PaymentMessages.bundled()
    redact = DeadLetterRedaction(messages, memory_vault(KEY, FakeVaultRows()), retention=RETENTION)
    command = CancelPayment.create(
        payment_request_id=payment_request_id_for("order-2026120600001234", "k1", 0, "acme"),
        order_id="order-2026120600001234",
        requested_at=datetime(2026, 12, 6, 21, 0, tzinfo=UTC),
        client_id="acme",
    )
    value = messages.encode_cancel(command)
    assert await redact(value) == value


@pytest.mark.parametrize(
    "number",
    ["4242 4242 4242 4242", "4242-4242-4242-4242", "DE89 3704 0044 0532 0130 00"],
    ids=["card-spaced", "card-dashed", "iban-spaced"],
)
async def test_a_number_written_in_groups_is_masked_in_a_dead_letter(number: str) -> None:
    """A number as people write it (groups of four) is refused by the account rules, so
    its command is dead-lettered and masked in place: the groups must be masked too."""
    from schemas.codec import AvroCodec
    from schemas.registry import FileSchemaRegistry

    messages = PaymentMessages.bundled()
    redact = DeadLetterRedaction(messages, memory_vault(KEY, FakeVaultRows()), retention=RETENTION)
    account = {"type": "iban" if number[0].isalpha() else "card", "number": number}
    value = AvroCodec(FileSchemaRegistry.bundled()).encode(
        CREATE_PAYMENT, create_payment_record(payerAccount={**account, "holderName": None})
    )
    with pytest.raises(PaygateError):
        messages.decode_any_command(value)
    redacted = await redact(value)
    assert len(redacted) == len(value)
    assert number.encode() not in redacted
    # Every letter and digit masked but the last four; the separators stay (same length).
    shown = len([c for c in number if c.isalnum()]) - 4
    masked = ""
    for c in number:
        masked += "*" if c.isalnum() and shown > 0 else c
        shown -= c.isalnum()
    assert masked.encode() in redacted


class _RefusingVault:
    """A vault whose every tokenize fails as ``error`` does."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def tokenize(self, *_args: Any, **_kwargs: Any) -> VaultedAccount:
        raise self.error

    async def tokenize_along(self, *_args: Any, **_kwargs: Any) -> Any:
        raise self.error

    async def check_opens(self, *_args: Any, **_kwargs: Any) -> VaultedAccount:
        raise self.error

    async def newest_key_id(self) -> str:
        raise self.error


async def test_a_dead_letter_the_vault_refuses_for_good_is_masked() -> None:
    """The router retries a dead letter until it is written: a redaction that fails on
    every try would hold its partition for ever. Only a vault that is down may do that."""
    from schemas.codec import AvroCodec
    from schemas.registry import FileSchemaRegistry

    messages = PaymentMessages.bundled()
    value = AvroCodec(FileSchemaRegistry.bundled()).encode(
        CREATE_PAYMENT, create_payment_record(amount=Decimal("-1"))
    )
    for_good = DeadLetterRedaction(messages, _RefusingVault(ValueError("bug")), retention=RETENTION)
    redacted = await for_good(value)
    assert redacted == mask_numbers_in(value)
    assert SUCCESS_CARD.encode() not in redacted
    down = DeadLetterRedaction(
        messages, _RefusingVault(ConnectionRefusedError("vault database")), retention=RETENTION
    )
    with pytest.raises(ConnectionRefusedError):
        await down(value)  # the router retries it until the vault is back


async def test_a_begin_refused_for_a_retired_key_is_admitted_again_once_then_an_error(
    key_pair: AccountKeyPair,
) -> None:
    # The begin that writes the intake's rows refuses them when their data key was retired
    # after the seal (tests/integration/test_vault_retire_race.py): nothing was written, so
    # the command is admitted again (new tokens, sealed under the newest key read afresh),
    # and a second refusal is an error, not a loop.
    class RefusingBegins:
        def __init__(self, refusals: int) -> None:
            self.refusals = refusals
            self.begun: list[CreatePayment] = []

        async def handle(self, command: CreatePayment, along: Any = ()) -> Outcome:
            self.begun.append(command)
            if self.refusals:
                self.refusals -= 1
                raise KeyRetiredError(["dk_retired"])
            return Outcome.SUCCEEDED

    payments = intake(FakeVaultRows(), key_pair, accept_clear=True)
    once = RefusingBegins(1)
    assert await AdmittedPayments(payments, once).handle(create_payment()) is Outcome.SUCCEEDED
    first, second = once.begun
    assert isinstance(first.payer, VaultedAccount)
    assert isinstance(second.payer, VaultedAccount)
    assert first.payer.token != second.payer.token

    twice = RefusingBegins(2)
    await refused(
        ErrorCode.ENCRYPTION_KEY_UNKNOWN,
        AdmittedPayments(payments, twice).handle(create_payment()),
    )
    assert len(twice.begun) == 2
