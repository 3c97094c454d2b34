"""The development API key of ``paygate dev``: made once, kept in a file, reused.

The README's curl session reads the key from :data:`DEV_KEY_FILE`, so it keeps working
across restarts. If the key in the file no longer works (another database, revoked), a
new one is issued and the file replaced. Development only: production keys come from
``paygate apikey create`` and live in the client's secret store, never in a file here.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Final

from paygate.database import open_database
from paygate.settings import Environment, Settings

DEV_KEY_FILE: Final = Path(".cache/dev-api-key")
DEV_CLIENT_ID: Final = "dev"


async def ensure_dev_api_key(settings: Settings, path: Path = DEV_KEY_FILE) -> str:
    """A key that authenticates as :data:`DEV_CLIENT_ID` against the configured store.

    Only in development mode: in production it would leave a working credential in a file.
    """
    if settings.env is not Environment.DEVELOPMENT:
        raise RuntimeError(
            "the development API key is made only with PAYGATE_ENV=development (paygate dev); "
            "issue production keys with `paygate apikey create`"
        )
    db = await open_database(settings)
    try:
        store = db.api_keys
        existing = await asyncio.to_thread(_read_key, path)
        if existing and await store.authenticate(existing) is not None:
            return existing
        issued = await store.create(DEV_CLIENT_ID, "paygate dev")
    finally:
        await db.close()
    await asyncio.to_thread(_write_key, path, issued.api_key)
    return issued.api_key


def _read_key(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _write_key(path: Path, api_key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Owner-only from the moment it exists: it is a working credential.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(api_key + "\n")
