"""Key-encryption keys: what wraps the vault's data keys.

:class:`KeyEncryptionKeys` is the port: a KMS (AWS KMS, GCP KMS, Vault transit) plugs in by
implementing ``wrap``/``unwrap``, and the key material then never leaves it.
:class:`LocalKeyEncryptionKeys` is the default: AES-256 keys from a file or setting, each
under an id, written ``<id>:<64 hex digits>``. The first key is the current one (it wraps
new data keys); the others only unwrap, so a key-encryption key rotates by putting the new
one first, running ``paygate keys rewrap`` and then removing the old one.

Every wrapped data key is bound to its data key id (AES-GCM associated data), so a wrapped
key copied to another row does not open.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.errors import key_mismatch, key_unknown

KEK_KIND: Final = "key-encryption key"
_NONCE_BYTES: Final = 12
_ENTRY: Final = re.compile(r"\A([A-Za-z0-9._:\-]{1,64}):([0-9a-fA-F]{64})\Z")


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key as stored: which key-encryption key wrapped it, and the wrapped bytes."""

    kek_id: str
    wrapped: bytes


class KeyEncryptionKeys(Protocol):
    """The port a KMS implements. Errors are catalogue errors (vault.errors)."""

    @property
    def current_id(self) -> str:
        """The id of the key that wraps new data keys."""
        ...

    async def wrap(self, data_key: bytes, *, data_key_id: str) -> WrappedKey:
        """``data_key`` wrapped by the current key, bound to ``data_key_id``."""
        ...

    async def unwrap(self, wrapped: WrappedKey, *, data_key_id: str) -> bytes:
        """The data key; ``encryption_key_unknown`` if ``wrapped.kek_id`` is not held,
        ``encryption_key_mismatch`` if that key does not open it."""
        ...


class KeyFormatError(ValueError):
    """A key-encryption key that is not ``<id>:<64 hex digits>``; never shows the key."""


def parse_keys(text: str) -> list[tuple[str, bytes]]:
    """``id:hex`` entries separated by commas or new lines (blank lines ignored)."""
    keys: list[tuple[str, bytes]] = []
    for number, raw in enumerate(re.split(r"[,\n]", text), start=1):
        entry = raw.strip()
        if not entry:
            continue
        match = _ENTRY.match(entry)
        if match is None:
            raise KeyFormatError(
                f"key-encryption key {number} is not `<id>:<64 hex digits>` "
                "(an id of letters, digits or . _ : -, then 32 random bytes in hex)"
            )
        keys.append((match.group(1), bytes.fromhex(match.group(2))))
    return keys


class LocalKeyEncryptionKeys:
    """AES-256-GCM key-encryption keys held in this process's memory."""

    def __init__(self, keys: Iterable[tuple[str, bytes]]) -> None:
        ordered = list(keys)
        if not ordered:
            raise KeyFormatError("no key-encryption key configured")
        held: dict[str, AESGCM] = {}
        for kek_id, key in ordered:
            if len(key) != 32:
                raise KeyFormatError(f"key-encryption key {kek_id!r} is not 32 bytes")
            held.setdefault(kek_id, AESGCM(key))
        self._keys: Mapping[str, AESGCM] = held
        self._current = ordered[0][0]

    @classmethod
    def from_text(cls, text: str) -> LocalKeyEncryptionKeys:
        return cls(parse_keys(text))

    @property
    def current_id(self) -> str:
        return self._current

    async def wrap(self, data_key: bytes, *, data_key_id: str) -> WrappedKey:
        nonce = os.urandom(_NONCE_BYTES)
        body = self._keys[self._current].encrypt(nonce, data_key, data_key_id.encode())
        return WrappedKey(self._current, nonce + body)

    async def unwrap(self, wrapped: WrappedKey, *, data_key_id: str) -> bytes:
        aead = self._keys.get(wrapped.kek_id)
        if aead is None:
            raise key_unknown(KEK_KIND, wrapped.kek_id)
        nonce, body = wrapped.wrapped[:_NONCE_BYTES], wrapped.wrapped[_NONCE_BYTES:]
        try:
            return aead.decrypt(nonce, body, data_key_id.encode())
        except InvalidTag:
            # A local key cannot tell a wrong key from an altered wrapped key; a wrong key
            # under a known id is by far the likelier (a mistyped or swapped key file).
            raise key_mismatch(KEK_KIND, wrapped.kek_id) from None
