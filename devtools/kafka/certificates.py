"""A throwaway certificate authority for a local TLS broker: a CA, a server certificate for
127.0.0.1/localhost, and a client certificate for mutual TLS.

For development and tests only: the keys are unencrypted files in the given directory and
live a day. The broker reads them as Kafka's PEM stores (``ssl.keystore.type=PEM``: one
file with the PKCS#8 key followed by the certificate chain), Python clients as PEM files.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_LIFETIME: Final = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class LocalPki:
    """Paths of the PEM files :func:`make_local_pki` wrote."""

    ca_file: Path
    server_keystore: Path  # server key (PKCS#8) then its certificate: Kafka's PEM keystore
    client_cert_file: Path
    client_key_file: Path


def make_local_pki(directory: Path, *, client_name: str = "paygate") -> LocalPki:
    """Write a fresh CA, a server certificate valid for 127.0.0.1 and localhost, and a
    client certificate whose subject CN is ``client_name`` (the mTLS principal)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "paygate test CA")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        _builder(_cn("localhost"), ca_name, server_key.public_key(), now)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = (
        _builder(_cn(client_name), ca_name, client_key.public_key(), now)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki = LocalPki(
        ca_file=directory / "ca.pem",
        server_keystore=directory / "server-keystore.pem",
        client_cert_file=directory / "client.pem",
        client_key_file=directory / "client-key.pem",
    )
    pki.ca_file.write_bytes(_cert_pem(ca_cert))
    pki.server_keystore.write_bytes(_key_pem(server_key) + _cert_pem(server_cert))
    pki.client_cert_file.write_bytes(_cert_pem(client_cert))
    pki.client_key_file.write_bytes(_key_pem(client_key))
    for path in (pki.server_keystore, pki.client_key_file):
        path.chmod(0o600)
    return pki


def _cn(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # a little clock skew is tolerated
        .not_valid_after(now + _LIFETIME)
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # PKCS#8: the only private-key format Kafka's PEM keystore reads.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
