"""Certificate reload: a renewed certificate takes effect without a restart.

The listener keeps one :class:`ssl.SSLContext` for its whole life. Loading a new chain into
that same context changes what *new* handshakes present; connections already open keep the
certificate they started with (OpenSSL copies it into each connection when it is made), so
nothing is dropped and no request is lost.

A pair is first loaded into a scratch context, so a mismatched key or a half-written file
is refused there: loading a certificate into the live context would already replace the
one it serves, and OpenSSL drops the old key when the new certificate does not match it.
Both files are read once and loaded from private copies, so what was checked is exactly
what is installed even if the files change again meanwhile.

Checks happen every ``interval_s`` and whenever :meth:`CertificateReloader.request_check`
is called (the facade calls it on SIGHUP). A check compares the SHA-256 of both files
with the pair last examined, so unchanged files cost two small reads and nothing else,
and a refused pair is logged once, not at every check. Outside development the
self-signed development certificate is refused like a broken pair (and logged as an
error): production refuses to start with it, and a reload must not install it either.

Every check that keeps the current certificate because the files on disk are refused
counts in ``paygate_tls_reload_refusals_total`` by :class:`RefusalReason` (the first check
and each one after while the files stay as they are, though only the first is logged), so
the ``PaygateTlsReloadRefused`` alert stays up until the files are fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
import os
import signal
import ssl
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from http_facade.tls import is_development_certificate
from telemetry.metrics import Metrics

log = logging.getLogger("paygate.http.tls")

DEFAULT_INTERVAL_S: Final = 60.0


class ReloadOutcome(enum.Enum):
    UNCHANGED = "unchanged"  # the files are the pair last examined
    RELOADED = "reloaded"  # new handshakes present the new certificate
    # Unreadable, not a matching pair, or the development certificate where it is refused:
    # the old one stays.
    REJECTED = "rejected"


class RefusalReason(enum.Enum):
    """Why the files on disk are not served: the ``reason`` label of the refusal counter."""

    DEVELOPMENT_CERTIFICATE = "development_certificate"  # where refuse_development says so
    UNREADABLE = "unreadable"  # a file missing or not readable
    INVALID_PAIR = "invalid_pair"  # not a certificate and its matching key


@dataclass(frozen=True, slots=True)
class _Pair:
    cert: bytes
    key: bytes

    @property
    def digest(self) -> str:
        # Length-prefixed so that no two different pairs hash alike.
        hashed = hashlib.sha256()
        for part in (self.cert, self.key):
            hashed.update(len(part).to_bytes(8, "big"))
            hashed.update(part)
        return hashed.hexdigest()


class CertificateReloader:
    """Keeps ``context`` serving the pair found in ``cert`` and ``key``.

    Start with :meth:`start` (or ``async with``); :meth:`stop` is safe to call twice.
    ``reloads`` counts the pairs installed since start, the first check included;
    ``refusals`` the development certificates refused.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        cert: Path,
        key: Path,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        refuse_development: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        """``refuse_development``: outside development, the self-signed development
        certificate is refused here as at start (paygate.production_checks), so a reload
        cannot switch a production listener to a certificate no client can verify.
        ``metrics``: where refused checks are counted (the facade's)."""
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s!r}")
        self._context = context
        self._cert = cert
        self._key = key
        self._interval_s = interval_s
        self._refuse_development = refuse_development
        self._examined: str | None = None  # digest (or read error) last looked at
        # Why the pair last looked at was refused, None if it was not.
        self._examined_refused: RefusalReason | None = None
        self._metrics = metrics
        if metrics is not None:
            # Every reason exported from the start, at 0: an alert on increase() needs a
            # sample before the first refusal to see it.
            for reason in RefusalReason:
                metrics.tls_reload_refusals.labels(reason.value)
        self._installed: _Pair | None = None
        self._wake = asyncio.Event()
        # One check at a time: two interleaved ones could install an older read last.
        self._checking = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0
        self.refusals = 0  # development certificates refused (see refuse_development)

    async def start(self) -> None:
        # The first check installs what is on disk now, which is normally what the context
        # was made from; it also records the pair to compare later checks with.
        await self.reload_if_changed()
        self._task = asyncio.create_task(self._run(), name="tls-certificate-reload")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> CertificateReloader:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def request_check(self) -> None:
        """Check now rather than at the next interval (e.g. on SIGHUP)."""
        self._wake.set()

    async def reload_if_changed(self) -> ReloadOutcome:
        """Install the pair on disk if it differs from the last one examined and is valid."""
        async with self._checking:
            return await self._reload_if_changed()

    async def _reload_if_changed(self) -> ReloadOutcome:
        try:
            pair = await asyncio.to_thread(self._read)
        except OSError as exc:
            seen = f"unreadable: {type(exc).__name__} {exc.errno}"
            if seen != self._examined:
                self._examined = seen
                log.warning(
                    "TLS certificate files unreadable; keeping the current certificate",
                    extra={"cert_file": str(self._cert), "reason": f"{type(exc).__name__}"},
                )
            self._refused(RefusalReason.UNREADABLE)
            return ReloadOutcome.REJECTED
        digest = pair.digest
        if digest == self._examined:
            if self._examined_refused is not None:
                # Logged once, counted at every check: the alert lasts as long as the files.
                self._refused(self._examined_refused)
            return ReloadOutcome.UNCHANGED
        self._examined = digest
        self._examined_refused = None
        if self._refuse_development and is_development_certificate(pair.cert):
            # An error, not a warning: the files now hold what production refuses to start
            # with, and the next restart will refuse to start until they are fixed.
            log.error(
                "TLS certificate refused: it is the self-signed development certificate; "
                "keeping the current certificate",
                extra={"cert_file": str(self._cert), "setting": "PAYGATE_TLS_CERT_FILE"},
            )
            self.refusals += 1
            self._refused(RefusalReason.DEVELOPMENT_CERTIFICATE)
            return ReloadOutcome.REJECTED
        # Loaded in the event loop's thread, where every handshake of this listener also
        # runs, so no handshake can see the context half-updated.
        try:
            with _private_copies(pair) as (cert_copy, key_copy):
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_copy, key_copy)
                self._install(cert_copy, key_copy)
        except (ssl.SSLError, OSError, ValueError) as exc:
            log.warning(
                "TLS certificate pair refused; keeping the current certificate",
                extra={"cert_file": str(self._cert), "reason": _reason(exc)},
            )
            self._refused(RefusalReason.INVALID_PAIR)
            return ReloadOutcome.REJECTED
        self._installed = pair
        self.reloads += 1
        log.info(
            "TLS certificate loaded",
            extra={"cert_file": str(self._cert), **_describe(pair.cert)},
        )
        return ReloadOutcome.RELOADED

    def _refused(self, reason: RefusalReason) -> None:
        self._examined_refused = reason
        if self._metrics is not None:
            self._metrics.tls_reload_refusals.labels(reason.value).inc()

    def _install(self, cert_copy: Path, key_copy: Path) -> None:
        try:
            self._context.load_cert_chain(cert_copy, key_copy)
        except BaseException:
            # The scratch load of the same bytes passed, so this should not happen; if it
            # does, the live context may hold the new certificate without a key: put the
            # previous pair back rather than fail every handshake.
            if self._installed is not None:
                with _private_copies(self._installed) as (old_cert, old_key):
                    self._context.load_cert_chain(old_cert, old_key)
            raise

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.reload_if_changed()
            except Exception:  # a bug here must not stop later renewals from loading
                log.exception("TLS certificate check failed")

    def _read(self) -> _Pair:
        return _Pair(self._cert.read_bytes(), self._key.read_bytes())


@contextlib.contextmanager
def _private_copies(pair: _Pair) -> Iterator[tuple[Path, Path]]:
    """``pair`` as two files in a fresh 0700 directory, deleted on exit."""
    with tempfile.TemporaryDirectory(prefix="paygate-tls-") as directory:
        cert_copy, key_copy = Path(directory) / "cert.pem", Path(directory) / "key.pem"
        for path, data in ((cert_copy, pair.cert), (key_copy, pair.key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
        yield cert_copy, key_copy


def _describe(cert_pem: bytes) -> dict[str, str]:
    """The leaf certificate's fingerprint and expiry, for the log line."""
    try:
        leaf = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return {}
    return {
        "sha256_fingerprint": leaf.fingerprint(hashes.SHA256()).hex(),
        "not_after": leaf.not_valid_after_utc.isoformat(),
    }


def _reason(exc: BaseException) -> str:
    # OpenSSL's reason ("KEY_VALUES_MISMATCH", "NO_START_LINE", ...) says what is wrong
    # without quoting the files; other errors are named by their type only.
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return type(exc).__name__


def reload_on_sighup(reloader: CertificateReloader) -> Callable[[], None]:
    """Make SIGHUP ask ``reloader`` for a check; returns the function that undoes it.

    Only the main thread's loop can handle signals (and not on every platform); elsewhere
    this does nothing and the interval alone applies.
    """
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reloader.request_check)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):
        return lambda: None

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return undo
