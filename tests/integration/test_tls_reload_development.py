"""A reload cannot switch a production listener to the development certificate.

Production refuses to start with the self-signed development certificate
(paygate.production_checks); the live reload used to install whatever pair loaded, so
copying that certificate over the served files (or a renewal job pointed at the wrong
directory) switched a running production facade to it. Now the reloader, told to refuse it
(everywhere but development), keeps the certificate it serves, logs an error naming the
setting, counts the refusal, and still installs a genuine renewal afterwards. Checked with
real TLS handshakes on loopback.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from http_facade.tls import ensure_self_signed_certificate, server_ssl_context
from http_facade.tls_reload import CertificateReloader, ReloadOutcome

pytestmark = pytest.mark.integration


def _own_pair(directory: Path, name: str) -> tuple[bytes, bytes]:
    """A pair an operator could deploy: not the development certificate (another name)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _install(cert: bytes, key: bytes, cert_path: Path, key_path: Path) -> None:
    """Each file replaced whole, as renewal tools do."""
    for path, data in ((key_path, key), (cert_path, cert)):
        staged = path.with_name(path.name + ".new")
        staged.write_bytes(data)
        os.replace(staged, path)


async def _served_fingerprint(port: int, trusted: bytes) -> str:
    """The SHA-256 of the certificate a new handshake gets, trusting ``trusted`` only."""
    context = ssl.create_default_context(cadata=trusted.decode())
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        assert der is not None
        return hashlib.sha256(der).hexdigest()
    finally:
        writer.close()


def _fingerprint(cert_pem: bytes) -> str:
    return x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256()).hex()


@pytest.fixture
async def listener(tmp_path: Path) -> AsyncIterator[tuple[ssl.SSLContext, Path, Path, int]]:
    cert_path, key_path = tmp_path / "live" / "tls.crt", tmp_path / "live" / "tls.key"
    cert, key = _own_pair(tmp_path / "live", "pay.example.test")
    _install(cert, key, cert_path, key_path)
    context = server_ssl_context(cert_path, key_path)

    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield context, cert_path, key_path, port
    finally:
        server.close()
        await server.wait_closed()


async def test_a_reload_refuses_the_development_certificate_and_keeps_serving(
    listener: tuple[ssl.SSLContext, Path, Path, int],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    context, cert_path, key_path, port = listener
    own = cert_path.read_bytes()
    dev_cert, dev_key = ensure_self_signed_certificate(tmp_path / "dev")
    async with CertificateReloader(
        context, cert_path, key_path, interval_s=3600, refuse_development=True
    ) as reloader:
        assert reloader.reloads == 1  # the operator's own pair, at start
        _install(dev_cert.read_bytes(), dev_key.read_bytes(), cert_path, key_path)
        with caplog.at_level(logging.INFO, logger="paygate.http.tls"):
            assert await reloader.reload_if_changed() is ReloadOutcome.REJECTED
            # Not reported again at every check while the files stay the same.
            assert await reloader.reload_if_changed() is ReloadOutcome.UNCHANGED
        assert (reloader.reloads, reloader.refusals) == (1, 1)
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert [r.getMessage() for r in errors] == [
            "TLS certificate refused: it is the self-signed development certificate; "
            "keeping the current certificate"
        ]
        assert vars(errors[0])["setting"] == "PAYGATE_TLS_CERT_FILE"
        # New handshakes still get the operator's certificate.
        assert await _served_fingerprint(port, own) == _fingerprint(own)

        # A genuine renewal afterwards is installed as ever.
        renewed, renewed_key = _own_pair(tmp_path / "renewed", "pay.example.test")
        _install(renewed, renewed_key, cert_path, key_path)
        assert await reloader.reload_if_changed() is ReloadOutcome.RELOADED
        assert await _served_fingerprint(port, renewed) == _fingerprint(renewed)


async def test_development_reloads_the_development_certificate(
    listener: tuple[ssl.SSLContext, Path, Path, int], tmp_path: Path
) -> None:
    context, cert_path, key_path, port = listener
    dev_cert, dev_key = ensure_self_signed_certificate(tmp_path / "dev")
    # `paygate dev` serves it: the reloader is not told to refuse it there.
    async with CertificateReloader(context, cert_path, key_path, interval_s=3600) as reloader:
        _install(dev_cert.read_bytes(), dev_key.read_bytes(), cert_path, key_path)
        assert await reloader.reload_if_changed() is ReloadOutcome.RELOADED
        assert reloader.refusals == 0
    pem = dev_cert.read_bytes()
    assert await _served_fingerprint(port, pem) == _fingerprint(pem)
