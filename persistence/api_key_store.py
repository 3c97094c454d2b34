"""API keys: issue, revoke, list, and tell which client a presented key belongs to.

A key reads ``pgk_<key id>_<secret>``: 16 hex digits of public id, then 64 hex digits
(256 random bits) of secret. The id finds the row; only the SHA-256 of the secret is
stored, and it is compared in constant time. So the clear key exists once, in the answer
to :meth:`ApiKeyStore.create`, and a copy of the database lets nobody call the API.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.clock import utc_now
from persistence.api_key_tables import api_keys
from persistence.engine import as_utc, write_transaction

KEY_PREFIX: Final = "pgk"
_KEY: Final = re.compile(r"\Apgk_([0-9a-f]{16})_([0-9a-f]{64})\Z")
# Client ids are logged with every request, so they are kept short and plain.
_CLIENT_ID: Final = re.compile(r"\A[A-Za-z0-9._:\-]{1,64}\Z")
_LABEL_MAX: Final = 128


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key; ``api_key`` is the only copy of it in clear, hence kept out of repr."""

    key_id: str
    client_id: str
    api_key: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """What may be shown about a key: everything but its secret."""

    key_id: str
    client_id: str
    label: str | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def check_client_id(client_id: str) -> str:
    if not _CLIENT_ID.match(client_id):
        raise ValueError("a client id is 1 to 64 characters of A-Z a-z 0-9 . _ : -")
    return client_id


def _secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


class ApiKeyStore:
    """The ``api_keys`` table. Every method is one short transaction."""

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def create(self, client_id: str, label: str | None = None) -> IssuedKey:
        """Issue a key for ``client_id``; raises ValueError for a bad client id or label."""
        check_client_id(client_id)
        if label is not None and (len(label) > _LABEL_MAX or not label.isprintable()):
            raise ValueError(f"a label is at most {_LABEL_MAX} printable characters")
        key_id, secret = secrets.token_hex(8), secrets.token_hex(32)
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                insert(api_keys).values(
                    key_id=key_id,
                    client_id=client_id,
                    label=label,
                    secret_sha256=_secret_digest(secret),
                    created_at=self._clock(),
                )
            )
        return IssuedKey(key_id, client_id, f"{KEY_PREFIX}_{key_id}_{secret}")

    async def revoke(self, key_id: str) -> datetime | None:
        """Revoke the key; returns when it was revoked (now, or earlier), None if unknown."""
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )
            revoked_at: datetime | None = await conn.scalar(
                select(api_keys.c.revoked_at).where(api_keys.c.key_id == key_id)
            )
        return as_utc(revoked_at) if revoked_at is not None else None

    async def list_keys(self, client_id: str | None = None) -> list[ApiKeyInfo]:
        """Keys, oldest first, optionally of one client; secrets are never part of it."""
        query = select(
            api_keys.c.key_id,
            api_keys.c.client_id,
            api_keys.c.label,
            api_keys.c.created_at,
            api_keys.c.revoked_at,
        ).order_by(api_keys.c.created_at, api_keys.c.key_id)
        if client_id is not None:
            query = query.where(api_keys.c.client_id == client_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            ApiKeyInfo(
                key_id=row.key_id,
                client_id=row.client_id,
                label=row.label,
                created_at=as_utc(row.created_at),
                revoked_at=as_utc(row.revoked_at) if row.revoked_at is not None else None,
            )
            for row in rows
        ]

    async def authenticate(self, api_key: str) -> str | None:
        """The client id of an active key; None for a malformed, unknown or revoked one."""
        match = _KEY.match(api_key)
        if match is None:
            return None
        key_id, secret = match.groups()
        # Only the public id goes into the query, so no database error or log of
        # statements can ever carry the secret.
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        api_keys.c.client_id, api_keys.c.secret_sha256, api_keys.c.revoked_at
                    ).where(api_keys.c.key_id == key_id)
                )
            ).one_or_none()
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(_secret_digest(secret), row.secret_sha256):
            return None
        client_id: str = row.client_id
        return client_id
