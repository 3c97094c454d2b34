"""Generated Alipay test keys, for the sandbox's Alipay simulator in development stacks.

A development stack (``paygate dev``, docker-compose.yml, the Helm chart's dev values) pays
by Alipay through the simulator (providers.sandbox.alipay), which needs two RSA2 key pairs:
the simulator's own ("Alipay's") and paygate's app pair. Both private keys live as PKCS#1
PEM files in one directory, ``PAYGATE_ALIPAY_DEV_KEYS_DIR``; each side derives the public
half it needs from the other's private key. Every process of a stack reads the same
directory (a volume in compose, a Secret in Kubernetes), so the simulator and paygate agree.

Invariant: generated keys are reached only through ``PAYGATE_ALIPAY_DEV_KEYS_DIR`` and come
with the app id :data:`DEV_APP_ID`; production refuses both (paygate.production_checks),
because whoever reads the directory can forge "Alipay's" signed notifications.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pydantic import SecretStr

from paygate.settings import Settings

if TYPE_CHECKING:
    # Imported when keys are made or read, not by production_checks' import of DEV_APP_ID.
    from providers.sandbox.alipay import Rsa2Keys

# Says what it is in any log or console: no real Alipay app has this id.
DEV_APP_ID: Final = "paygate-development-app"
ALIPAY_KEY_FILE: Final = "alipay-private.pem"
APP_KEY_FILE: Final = "app-private.pem"


@dataclass(frozen=True, slots=True)
class DevAlipayKeys:
    """The simulator's pair and the app's pair."""

    alipay: Rsa2Keys
    app: Rsa2Keys


def ensure_dev_keys(directory: Path) -> DevAlipayKeys:
    """The keys in ``directory``, each private key generated first if its file is missing.

    Each file is written whole under a temporary name, then renamed: a process reading the
    directory meanwhile sees a key or nothing, never half of one. Mode 0600.
    """
    from providers.sandbox.alipay import Rsa2Keys

    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in (ALIPAY_KEY_FILE, APP_KEY_FILE):
        path = directory / name
        if not path.exists():
            _write_atomically(path, Rsa2Keys.generate().private_pem)
    return read_dev_keys(directory)


def read_dev_keys(directory: Path) -> DevAlipayKeys:
    """The keys in ``directory``; a missing or malformed file stops the process."""
    from providers.sandbox.alipay import Rsa2Keys

    try:
        return DevAlipayKeys(
            alipay=Rsa2Keys.of_private((directory / ALIPAY_KEY_FILE).read_text()),
            app=Rsa2Keys.of_private((directory / APP_KEY_FILE).read_text()),
        )
    except (OSError, ValueError) as exc:
        raise SystemExit(
            f"PAYGATE_ALIPAY_DEV_KEYS_DIR: cannot read the Alipay test keys in {directory} "
            f"({exc}); the sandbox acquirer (`paygate acquirer`, `paygate dev`) generates them"
        ) from None


def with_dev_keys(settings: Settings) -> Settings:
    """``settings`` with the Alipay app id and keys of the dev keys directory, if one is set;
    unchanged otherwise. Explicit Alipay settings are not overridden: a dev stack that sets
    them means them."""
    directory = settings.alipay_dev_keys_dir
    if directory is None:
        return settings
    keys = read_dev_keys(directory)
    update: dict[str, object] = {}
    if settings.alipay_app_id is None:
        update["alipay_app_id"] = DEV_APP_ID
    if settings.alipay_app_private_key is None:
        update["alipay_app_private_key"] = SecretStr(keys.app.private_pem)
    if settings.alipay_public_key is None:
        update["alipay_public_key"] = keys.alipay.public_pem
    return settings.model_copy(update=update)


def _write_atomically(path: Path, text: str) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
