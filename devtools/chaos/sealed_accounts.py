"""The chaos feed's account numbers, encrypted to paygate's public key as an upstream
producer must send them on Kafka (producer/account_encryption.py).

A clear number on the bus is refused outside development, and one sent anyway sits in the
command topic's segments for as long as they are kept: the chaos run feeds only encrypted
numbers, so that a scan of every segment after the run proves paygate itself wrote none
(tests/e2e/test_chaos.py). The clear test numbers stay in the plan, in memory, because they
pick the acquirer's behaviour the verdict expects.
"""

from __future__ import annotations

from pathlib import Path

from domain.accounts import Account
from domain.vaulted import EncryptedAccount
from producer.account_encryption import encrypt_account_number
from vault.account_key_pair import AccountKeyPair


def public_key_of(key_file: Path) -> bytes:
    """The public half of the RSA key in ``key_file`` (generated there when missing), the
    key the run's consumers decrypt with."""
    pair = AccountKeyPair.from_files([key_file], generate_missing=True)
    return pair.published.public_key_pem.encode()


def sealed(public_key_pem: bytes, account: Account) -> EncryptedAccount:
    """``account``'s number encrypted to ``public_key_pem`` (fresh content key each call)."""
    record = encrypt_account_number(public_key_pem, account.type.value, account.number)
    return EncryptedAccount(
        account.type,
        str(record["keyId"]),
        _bytes(record["wrappedKey"]),
        _bytes(record["nonce"]),
        _bytes(record["ciphertext"]),
    )


def _bytes(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"an encrypted number's field is {type(value).__name__}, not bytes")
    return value
