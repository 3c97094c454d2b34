"""The secured client listeners a local broker can add to its PLAINTEXT one: what a
company cluster looks like from a client, for tests of paygate's TLS and SASL settings.

- ``SASL_SSL``: TLS with the broker certificate of a :class:`LocalPki`, login with SCRAM
  (SHA-256 or SHA-512). The users are written into the KRaft metadata when the storage is
  formatted (``kafka-storage format --add-scram``), so they exist from the first start.
- ``MTLS`` (protocol ``SSL``): TLS that requires a client certificate signed by the same
  CA; the certificate's subject is the client's principal.

The PLAINTEXT listener stays: the broker talks to itself over it, and tests set up topics
through it. No authorizer is configured: any authenticated client may do anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from devtools.kafka.certificates import LocalPki

SASL_SSL_LISTENER: Final = "SASL_SSL"
MTLS_LISTENER: Final = "MTLS"
SCRAM_MECHANISMS: Final = ("SCRAM-SHA-256", "SCRAM-SHA-512")
_SCRAM_LOGIN: Final = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


@dataclass(frozen=True, slots=True)
class ScramUser:
    name: str
    password: str
    mechanism: str = "SCRAM-SHA-512"

    def __post_init__(self) -> None:
        if self.mechanism not in SCRAM_MECHANISMS:
            raise ValueError(f"unknown SCRAM mechanism {self.mechanism!r}")
        # The storage tool parses `[name=...,password=...]`: these would break it.
        for text in (self.name, self.password):
            if any(char in text for char in ',[]="') or not text:
                raise ValueError('SCRAM user names and passwords here must avoid , [ ] = "')


@dataclass(frozen=True, slots=True)
class SecureListeners:
    """Adds a ``SASL_SSL`` listener for ``users`` and a mutual-TLS listener, both
    serving the broker certificate of ``pki``."""

    pki: LocalPki
    users: tuple[ScramUser, ...] = ()


def listeners(host: str, sasl_port: int, mtls_port: int) -> list[str]:
    """The two listeners' ``listeners`` (and ``advertised.listeners``) entries."""
    return [f"{SASL_SSL_LISTENER}://{host}:{sasl_port}", f"{MTLS_LISTENER}://{host}:{mtls_port}"]


def protocol_map() -> list[str]:
    """Their ``listener.security.protocol.map`` entries."""
    return [f"{SASL_SSL_LISTENER}:SASL_SSL", f"{MTLS_LISTENER}:SSL"]


def listener_properties(secure: SecureListeners) -> dict[str, str]:
    """The other server.properties entries the two listeners need."""
    props = {
        "sasl.enabled.mechanisms": ",".join(SCRAM_MECHANISMS),
        # Kafka's PEM stores: the key (PKCS#8) and chain in one file, the CA in another.
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(secure.pki.server_keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(secure.pki.ca_file),
        f"listener.name.{MTLS_LISTENER.lower()}.ssl.client.auth": "required",
    }
    sasl = SASL_SSL_LISTENER.lower()
    for mechanism in SCRAM_MECHANISMS:
        props[f"listener.name.{sasl}.{mechanism.lower()}.sasl.jaas.config"] = _SCRAM_LOGIN
    return props


def scram_format_arguments(secure: SecureListeners) -> list[str]:
    """``kafka-storage format`` arguments that create the SCRAM users."""
    arguments: list[str] = []
    for user in secure.users:
        arguments += [
            "--add-scram",
            f"{user.mechanism}=[name={user.name},password={user.password}]",
        ]
    return arguments
