"""A refused TLS handshake or SASL login ends the process at start, with one clear message.

aiokafka's clients treat every failure to bootstrap alike: they log it and raise "Unable
to bootstrap", and :func:`paygate.startup.start_with_retry` would then retry a wrong
password for two minutes, hammering the broker's authenticator. A broker that answers but
refuses us will go on refusing, so :func:`check_kafka_login` opens one connection to a
bootstrap broker itself, sees the real error, and raises :class:`KafkaLoginError` (exit
status 1, message only) for a refused login or certificate. An unreachable broker is not
its business: it returns, and the usual start-up retry waits for the broker.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Final

from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

_REFUSALS: Final = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    UnsupportedSaslMechanismError,
    IllegalSaslStateError,
)
_CONNECT_TIMEOUT_MS: Final = 10_000


class KafkaLoginError(SystemExit):
    """The broker refused our certificate check or login: retrying cannot help."""


async def check_kafka_login(options: Mapping[str, object]) -> None:
    """Connect to the bootstrap brokers in turn until one accepts us; raise
    :class:`KafkaLoginError` when one refuses the TLS handshake or the SASL login.

    Returns without a verdict when no broker could be reached at all.
    """
    settings = {key: value for key, value in options.items() if key != "bootstrap_servers"}
    for address in str(options["bootstrap_servers"]).split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            conn = await create_conn(
                host.strip("[]"),
                int(port),
                client_id="paygate-login-check",
                request_timeout_ms=_CONNECT_TIMEOUT_MS,
                **settings,
            )
        except _REFUSALS as exc:
            raise KafkaLoginError(_refused(options, address, exc)) from None
        except ssl.SSLError as exc:
            raise KafkaLoginError(_untrusted(address, exc)) from None
        except (OSError, TimeoutError, KafkaError) as exc:
            # With TLS 1.3 a broker refuses a client certificate after the handshake: the
            # alert surfaces as the cause of a closed connection.
            if isinstance(exc.__cause__, ssl.SSLError):
                raise KafkaLoginError(_untrusted(address, exc.__cause__)) from None
            continue  # unreachable, or no verdict on our credentials: try the next one
        conn.close()
        return


def _refused(options: Mapping[str, object], address: str, exc: Exception) -> str:
    user = options.get("sasl_plain_username")
    mechanism = options.get("sasl_mechanism")
    return (
        f"Kafka broker {address} refused the SASL login of user {user!r} with {mechanism} "
        f"({type(exc).__name__}: {exc}); check PAYGATE_KAFKA_SASL_USERNAME, "
        "PAYGATE_KAFKA_SASL_PASSWORD_FILE (or PAYGATE_KAFKA_SASL_PASSWORD) and "
        "PAYGATE_KAFKA_SASL_MECHANISM"
    )


def _untrusted(address: str, exc: ssl.SSLError) -> str:
    return (
        f"the TLS handshake with Kafka broker {address} failed ({exc.reason or exc}); check "
        "PAYGATE_KAFKA_SSL_CA_FILE (the CA that signed the broker's certificate), "
        "PAYGATE_KAFKA_SSL_CHECK_HOSTNAME, and for mutual TLS PAYGATE_KAFKA_SSL_CERT_FILE "
        "and PAYGATE_KAFKA_SSL_KEY_FILE"
    )
