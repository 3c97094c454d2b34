"""Refused certificate reloads are counted, by reason, at every check while they last.

The reloader keeps serving the certificate it has when the files on disk are refused, and
logs that once per pair: without a count an operator learns of it only when the served
certificate expires or a restart fails. ``paygate_tls_reload_refusals_total`` is what the
``PaygateTlsReloadRefused`` alert reads (monitoring/alerts_test.yml tests the rule). Real
files and real SSL contexts; the handshakes themselves are tested in
tests/integration/test_tls_reload_development.py and test_facade_https.py.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from http_facade.tls import ensure_self_signed_certificate, server_ssl_context
from http_facade.tls_reload import CertificateReloader, RefusalReason, ReloadOutcome
from telemetry.metrics import Metrics

pytestmark = pytest.mark.unit


def _own_pair(name: str) -> tuple[bytes, bytes]:
    """A certificate and key an operator could deploy (not the development certificate)."""
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
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _install(cert: bytes, key: bytes, cert_path: Path, key_path: Path) -> None:
    for path, data in ((key_path, key), (cert_path, cert)):
        staged = path.with_name(path.name + ".new")
        staged.write_bytes(data)
        os.replace(staged, path)


def _refused(metrics: Metrics) -> dict[str, float | None]:
    return {
        reason.value: metrics.registry.get_sample_value(
            "paygate_tls_reload_refusals_total", {"reason": reason.value}
        )
        for reason in RefusalReason
    }


async def test_each_refused_check_is_counted_by_reason_until_the_files_load(
    tmp_path: Path,
) -> None:
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    own_cert, own_key = _own_pair("pay.example.test")
    _install(own_cert, own_key, cert_path, key_path)
    metrics = Metrics()
    async with CertificateReloader(
        server_ssl_context(cert_path, key_path),
        cert_path,
        key_path,
        interval_s=3600,
        refuse_development=True,
        metrics=metrics,
    ) as reloader:
        # Exported from the start at 0, so the alert's increase() sees the first refusal.
        assert _refused(metrics) == dict.fromkeys(_refused(metrics), 0.0)

        dev_cert, dev_key = ensure_self_signed_certificate(tmp_path / "dev")
        _install(dev_cert.read_bytes(), dev_key.read_bytes(), cert_path, key_path)
        assert await reloader.reload_if_changed() is ReloadOutcome.REJECTED
        # Logged once, but counted at each check while the files stay refused.
        assert await reloader.reload_if_changed() is ReloadOutcome.UNCHANGED
        assert _refused(metrics)["development_certificate"] == 2

        # A key from another pair: OpenSSL's KEY_VALUES_MISMATCH.
        other_cert, other_key = _own_pair("other.example.test")
        _install(own_cert, other_key, cert_path, key_path)
        assert await reloader.reload_if_changed() is ReloadOutcome.REJECTED
        assert _refused(metrics)["invalid_pair"] == 1

        key_path.unlink()
        assert await reloader.reload_if_changed() is ReloadOutcome.REJECTED
        assert await reloader.reload_if_changed() is ReloadOutcome.REJECTED
        assert _refused(metrics)["unreadable"] == 2

        # A genuine renewal loads, and checks of it count nothing.
        _install(other_cert, other_key, cert_path, key_path)
        assert await reloader.reload_if_changed() is ReloadOutcome.RELOADED
        assert await reloader.reload_if_changed() is ReloadOutcome.UNCHANGED
        assert _refused(metrics) == {
            "development_certificate": 2,
            "unreadable": 2,
            "invalid_pair": 1,
        }
        assert (reloader.reloads, reloader.refusals) == (2, 1)
