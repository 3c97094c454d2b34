"""paygate's account encryption key pair: the public half is published
(``GET /v1/payment_methods/encryption_key``) so upstream producers can encrypt a number
without a secret (producer/account_encryption.py); the private half opens it in the
consumer, which vaults the number at once.

The key is an RSA-3072 private key in a PEM file (``PAYGATE_ACCOUNT_ENCRYPTION_KEY_FILE``).
More files may follow it for rotation: the first is published, all of them decrypt. In
development a missing file is generated (mode 0600) so ``make dev`` needs no set-up;
production refuses to generate one (paygate.production_checks).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.accounts import Account
from domain.vaulted import EncryptedAccount
from producer.account_encryption import ALGORITHM, associated_data, oaep, public_key_id
from vault.errors import key_mismatch, key_unknown, tampered

KEY_KIND: Final = "account encryption key"
_RSA_BITS: Final = 3072


@dataclass(frozen=True, slots=True)
class PublishedKey:
    key_id: str
    algorithm: str
    public_key_pem: str


class AccountKeyPair:
    """Decrypts :class:`EncryptedAccount` values made with any of its keys."""

    def __init__(self, private_keys: Sequence[rsa.RSAPrivateKey]) -> None:
        if not private_keys:
            raise ValueError("no account encryption key")
        self._keys: dict[str, rsa.RSAPrivateKey] = {}
        self._published: PublishedKey | None = None
        for key in private_keys:
            pem = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            key_id = public_key_id(pem)
            self._keys[key_id] = key
            if self._published is None:
                self._published = PublishedKey(key_id, ALGORITHM, pem.decode())

    @classmethod
    def from_files(cls, paths: Sequence[Path], *, generate_missing: bool) -> AccountKeyPair:
        return cls([_load(path, generate_missing=generate_missing) for path in paths])

    @property
    def published(self) -> PublishedKey:
        assert self._published is not None
        return self._published

    def decrypt(self, account: EncryptedAccount) -> Account:
        """The clear account; catalogue errors for an unknown key id, another key's value
        (or an altered wrapped key) and an altered ciphertext."""
        key = self._keys.get(account.key_id)
        if key is None:
            raise key_unknown(KEY_KIND, account.key_id)
        try:
            content_key = key.decrypt(account.wrapped_key, oaep())
        except ValueError:
            raise key_mismatch(KEY_KIND, account.key_id) from None
        if len(content_key) != 32 or len(account.nonce) != 12:
            raise tampered("the encrypted account number")
        try:
            plain = AESGCM(content_key).decrypt(
                account.nonce,
                account.ciphertext,
                associated_data(account.key_id, account.type.value),
            )
        except InvalidTag:
            raise tampered("the encrypted account number") from None
        try:
            number = plain.decode()
        except UnicodeDecodeError:
            raise tampered("the encrypted account number") from None
        # The same rules as a clear number on any intake.
        return Account.parse(account.type.value, number, account.holder_name, param="account")


def _load(path: Path, *, generate_missing: bool) -> rsa.RSAPrivateKey:
    if not path.exists() and generate_missing:
        _generate(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path} does not hold an RSA private key")
    return key


def _generate(path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    try:
        # A link fails if another process generated one meanwhile: then its key is used.
        os.link(partial, path)
    except FileExistsError:
        pass
    finally:
        partial.unlink()
