"""One value under one data key: AES-256-GCM, a fresh 96-bit nonce per encryption.

A ciphertext records its key id, so it names the key that opens it after any number of
rotations::

    0x01 | len(key id) | key id (ASCII) | nonce (12) | ciphertext and tag (16)

The key id and the caller's context (token, client, account type) are the associated data:
a ciphertext moved to another row, or relabelled with another key id, does not open. 2^32
encryptions under one data key keep random nonces safe; ``paygate keys rotate`` well
before that (docs/security.md).
"""

from __future__ import annotations

import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.errors import tampered

_VERSION: Final = 1
_NONCE_BYTES: Final = 12


_ACCOUNT: Final = "the stored account number"


def key_id_of(ciphertext: bytes, what: str = _ACCOUNT) -> str:
    """The id of the data key a ciphertext was made with; ``account_data_tampered`` (about
    ``what``) if it is not shaped like one of ours."""
    if len(ciphertext) < 2 or ciphertext[0] != _VERSION:
        raise tampered(what)
    length = ciphertext[1]
    raw = ciphertext[2 : 2 + length]
    if len(raw) != length or len(ciphertext) < 2 + length + _NONCE_BYTES + 16:
        raise tampered(what)
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise tampered(what) from None


def encrypt(aead: AESGCM, key_id: str, plain: bytes, context: bytes) -> bytes:
    header = bytes([_VERSION, len(key_id)]) + key_id.encode("ascii")
    nonce = os.urandom(_NONCE_BYTES)
    return header + nonce + aead.encrypt(nonce, plain, header + context)


def decrypt(aead: AESGCM, ciphertext: bytes, context: bytes, what: str = _ACCOUNT) -> bytes:
    """The plain value; ``account_data_tampered`` if anything bound to it was altered."""
    length = len(key_id_of(ciphertext, what))
    header, rest = ciphertext[: 2 + length], ciphertext[2 + length :]
    try:
        return aead.decrypt(rest[:_NONCE_BYTES], rest[_NONCE_BYTES:], header + context)
    except InvalidTag:
        raise tampered(what) from None
