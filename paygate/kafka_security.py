"""The one place every Kafka client's connection comes from: brokers, TLS and SASL login.

Every Kafka client paygate makes (the consumer, the producers, admin clients, the facade's
result feed, ``paygate dlq``, ``paygate topics``, bench, chaos and outage runs) is built
with ``**kafka_client_options(settings)``, so a secured cluster is configured once, in the
``PAYGATE_KAFKA_*`` settings, and no client can be forgotten.

Invariants:

- Bad configuration fails here, at start, before any client exists: a
  :class:`KafkaSettingsError` lists every problem at once, each naming its setting (a
  missing CA file, a mechanism without a SASL protocol, two sources for one password...).
- Secrets (the SASL password, from ``PAYGATE_KAFKA_SASL_PASSWORD_FILE`` or the
  environment) are read here and handed to aiokafka only; the options' ``repr`` masks them,
  so logging the options by mistake does not leak them.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Final

from paygate.settings import KafkaSecurityProtocol, Settings

_TLS: Final = frozenset({KafkaSecurityProtocol.SSL, KafkaSecurityProtocol.SASL_SSL})
_SASL: Final = frozenset({KafkaSecurityProtocol.SASL_PLAINTEXT, KafkaSecurityProtocol.SASL_SSL})
_SECRET_KEYS: Final = frozenset({"sasl_plain_password"})
_PROTOCOL: Final = "PAYGATE_KAFKA_SECURITY_PROTOCOL"


class KafkaSettingsError(SystemExit):
    """Raised instead of starting: exits non-zero with the message alone, no traceback."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "paygate cannot connect to Kafka with these settings:\n"
            + "\n".join(f"  - {problem}" for problem in problems)
        )


class KafkaClientOptions(dict[str, object]):
    """aiokafka keyword arguments for one cluster; ``repr`` masks the secrets."""

    def __repr__(self) -> str:
        shown = {key: "***" if key in _SECRET_KEYS else value for key, value in self.items()}
        return f"KafkaClientOptions({shown!r})"

    __str__ = __repr__


def kafka_client_options(settings: Settings) -> KafkaClientOptions:
    """``bootstrap_servers``, ``security_protocol`` and, as the protocol needs them, an
    ``ssl_context`` and the SASL login: what every aiokafka client of paygate is given.

    Raises :class:`KafkaSettingsError` naming every setting that is wrong.
    """
    problems: list[str] = []
    protocol = settings.kafka_security_protocol
    options = KafkaClientOptions(
        bootstrap_servers=settings.require_kafka(), security_protocol=protocol.value
    )
    if protocol in _TLS:
        context = _ssl_context(settings, problems)
        if context is not None:
            options["ssl_context"] = context
    else:
        problems += _unused(
            settings,
            protocol,
            ("kafka_ssl_ca_file", "kafka_ssl_cert_file", "kafka_ssl_key_file"),
            "uses no TLS",
        )
    if protocol in _SASL:
        options.update(_sasl_login(settings, problems))
    else:
        problems += _unused(
            settings,
            protocol,
            (
                "kafka_sasl_mechanism",
                "kafka_sasl_username",
                "kafka_sasl_password",
                "kafka_sasl_password_file",
            ),
            "does not log in with SASL",
        )
    if problems:
        raise KafkaSettingsError(problems)
    return options


_SECURITY_FIELDS: Final = (
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_sasl_password_file",
    "kafka_ssl_ca_file",
    "kafka_ssl_cert_file",
    "kafka_ssl_key_file",
)


def on_local_broker(settings: Settings, bootstrap_servers: str) -> Settings:
    """``settings`` pointed at a plaintext broker a developer tool started itself: the
    company cluster's TLS and login settings do not apply to it."""
    update: dict[str, object] = dict.fromkeys(_SECURITY_FIELDS)
    update |= {
        "kafka_bootstrap_servers": bootstrap_servers,
        "kafka_security_protocol": KafkaSecurityProtocol.PLAINTEXT,
    }
    return settings.model_copy(update=update)


def _env(field: str) -> str:
    return f"PAYGATE_{field.upper()}"


def _unused(
    settings: Settings, protocol: KafkaSecurityProtocol, fields: tuple[str, ...], why: str
) -> list[str]:
    # A TLS or SASL setting the protocol ignores is almost always a forgotten protocol:
    # connecting in plaintext instead would be the silent surprise.
    return [
        f"{_env(field)} is set, but {_PROTOCOL}={protocol.value} {why}"
        for field in fields
        if getattr(settings, field) is not None
    ]


def _ssl_context(settings: Settings, problems: list[str]) -> ssl.SSLContext | None:
    ca_file = settings.kafka_ssl_ca_file
    if ca_file is not None and not _readable(ca_file, "PAYGATE_KAFKA_SSL_CA_FILE", problems):
        return None
    try:
        context = ssl.create_default_context(
            purpose=ssl.Purpose.SERVER_AUTH, cafile=None if ca_file is None else str(ca_file)
        )
    except ssl.SSLError as exc:
        problems.append(f"PAYGATE_KAFKA_SSL_CA_FILE={ca_file} holds no usable certificate: {exc}")
        return None
    # Verification stays on either way (CERT_REQUIRED): only the name check is optional.
    context.check_hostname = settings.kafka_ssl_check_hostname
    cert, key = settings.kafka_ssl_cert_file, settings.kafka_ssl_key_file
    if (cert is None) != (key is None):
        problems.append(
            "set both PAYGATE_KAFKA_SSL_CERT_FILE and PAYGATE_KAFKA_SSL_KEY_FILE "
            "(mutual TLS), or neither"
        )
        return None
    if cert is not None and key is not None:
        if not (
            _readable(cert, "PAYGATE_KAFKA_SSL_CERT_FILE", problems)
            and _readable(key, "PAYGATE_KAFKA_SSL_KEY_FILE", problems)
        ):
            return None
        try:
            context.load_cert_chain(str(cert), str(key))
        except ssl.SSLError as exc:
            problems.append(
                f"PAYGATE_KAFKA_SSL_CERT_FILE={cert} and PAYGATE_KAFKA_SSL_KEY_FILE={key} "
                f"are not a matching PEM certificate and unencrypted key: {exc}"
            )
            return None
    return context


def _sasl_login(settings: Settings, problems: list[str]) -> dict[str, object]:
    login: dict[str, object] = {}
    if settings.kafka_sasl_mechanism is None:
        problems.append(
            f"PAYGATE_KAFKA_SASL_MECHANISM is required with {_PROTOCOL}="
            f"{settings.kafka_security_protocol.value} (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
        )
    else:
        login["sasl_mechanism"] = settings.kafka_sasl_mechanism.value
    if not settings.kafka_sasl_username:
        problems.append("PAYGATE_KAFKA_SASL_USERNAME is required with a SASL protocol")
    else:
        login["sasl_plain_username"] = settings.kafka_sasl_username
    password = _password(settings, problems)
    if password is not None:
        login["sasl_plain_password"] = password
    return login


def _password(settings: Settings, problems: list[str]) -> str | None:
    given, path = settings.kafka_sasl_password, settings.kafka_sasl_password_file
    if given is not None and path is not None:
        problems.append(
            "set PAYGATE_KAFKA_SASL_PASSWORD or PAYGATE_KAFKA_SASL_PASSWORD_FILE, not both"
        )
        return None
    if path is not None:
        if not _readable(path, "PAYGATE_KAFKA_SASL_PASSWORD_FILE", problems):
            return None
        # Files written with `echo` end in a newline that is not part of the secret.
        password = path.read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
        if not password:
            problems.append(f"PAYGATE_KAFKA_SASL_PASSWORD_FILE={path} is empty")
            return None
        return password
    if given is None or not given.get_secret_value():
        problems.append(
            "PAYGATE_KAFKA_SASL_PASSWORD_FILE (or PAYGATE_KAFKA_SASL_PASSWORD) is required "
            "with a SASL protocol"
        )
        return None
    return given.get_secret_value()


def _readable(path: Path, setting: str, problems: list[str]) -> bool:
    if not path.is_file():
        problems.append(f"{setting}={path}: no such file")
        return False
    try:
        with path.open("rb"):
            return True
    except OSError as exc:
        problems.append(f"{setting}={path} cannot be read: {exc.strerror}")
        return False
