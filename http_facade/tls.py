"""TLS for the facade: a self-signed localhost certificate for development and tests, and
the server-side SSL context used with any certificate.

The facade never serves plain HTTP, not even locally, so a development setup needs a
certificate from somewhere: :func:`ensure_self_signed_certificate` makes one once and
reuses it until it is about to expire. Production passes its own certificate files to
:func:`server_ssl_context` instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_FILE: Final = "localhost.crt"
KEY_FILE: Final = "localhost.key"
VALIDITY: Final = timedelta(days=365)
# Renew a little before expiry, so a server started today is not handed a certificate
# that lapses while it runs.
RENEW_BEFORE: Final = timedelta(days=7)
# Backdated by a few minutes: a client whose clock is slightly behind would otherwise
# see a certificate that is "not yet valid".
_BACKDATE: Final = timedelta(minutes=5)

# TLS 1.2 suites: forward secrecy (ECDHE) with AEAD ciphers only. TLS 1.3 suites are
# configured separately by OpenSSL and are all modern.
TLS12_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"
# Subject and issuer of every certificate made here, and of no certificate a client trusts.
_DEVELOPMENT_NAME: Final = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])


def ensure_self_signed_certificate(
    directory: Path, *, now: datetime | None = None
) -> tuple[Path, Path]:
    """``(cert, key)`` PEM files for CN=localhost in ``directory``, made if needed.

    The certificate (EC P-256, SAN ``DNS:localhost`` and ``IP:127.0.0.1``, valid one year)
    is reused while it is readable, matches its key and has more than ``RENEW_BEFORE`` to
    run. The key file is readable by its owner only (0600). ``now`` is for tests.
    """
    moment = now if now is not None else datetime.now(UTC)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    # Two processes starting together must not end up with one's key beside the other's
    # certificate; a lock around check-and-write prevents it.
    with _locked(directory / ".certificate.lock"):
        if not _reusable(cert_path, key_path, moment):
            key = ec.generate_private_key(ec.SECP256R1())
            # Key first: if we die between the two writes, the pair does not match and
            # the next call starts over rather than serving a mismatched pair.
            _write_atomically(key_path, _key_pem(key), mode=0o600)
            _write_atomically(cert_path, _certificate_pem(key, moment), mode=0o644)
        elif key_path.stat().st_mode & 0o077:
            key_path.chmod(0o600)
    return cert_path, key_path


def is_development_certificate(pem: bytes) -> bool:
    """Whether the first certificate in ``pem`` is one :func:`ensure_self_signed_certificate`
    makes (issued by itself to CN=localhost), wherever its file was copied to. Production
    refuses it (paygate.production_checks): no client can verify it."""
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return False
    return certificate.subject == certificate.issuer == _DEVELOPMENT_NAME


def server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context: TLS 1.2 or newer, ECDHE + AEAD suites, no renegotiation."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= (
        ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    )
    # aiohttp speaks HTTP/1.1 only; saying so stops clients from trying h2 on this port.
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(certfile=cert, keyfile=key)
    return context


def _reusable(cert_path: Path, key_path: Path, now: datetime) -> bool:
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return False
    same_key = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    in_date = (
        certificate.not_valid_before_utc <= now
        and now + RENEW_BEFORE < certificate.not_valid_after_utc
    )
    return same_key and in_date


def _certificate_pem(key: ec.EllipticCurvePrivateKey, now: datetime) -> bytes:
    name = _DEVELOPMENT_NAME
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    # mkstemp creates the file 0600 from the start, so the key is never readable by others,
    # not even for a moment; the rename makes the new content appear all at once.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
