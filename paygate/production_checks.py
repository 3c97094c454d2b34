"""Production refuses development settings: the one list of what is unsafe, and why.

Every default that makes ``paygate dev`` work out of the box (a fingerprint key written in
this repository, a self-signed certificate, the sandbox acquirer as the payment provider)
would be a hole in production. Under ``PAYGATE_ENV=production``, the default, a process
refuses to start while a setting it uses has such a value, and names every one of them
with the setting to change, at once: fixing them one restart at a time is how operators
end up "temporarily" on ``PAYGATE_ENV=development``. ``paygate dev`` and the tests run in
development mode, where nothing here is checked.

Each process is checked only for what it uses (:class:`Uses`): the consumer needs no
certificate, the facade calls no provider.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Flag, auto
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from http_facade.tls import is_development_certificate
from paygate.alipay_dev import DEV_APP_ID
from paygate.settings import (
    DEV_ACCOUNT_ENCRYPTION_KEY_FILE,
    DEV_FINGERPRINT_KEY,
    DEV_VAULT_KEK,
    Environment,
    KafkaSecurityProtocol,
    Settings,
)
from providers.routing import DEFAULT_ROUTE
from vault.kek import KeyFormatError, parse_keys

# HMAC-SHA256's key is as strong as its randomness; 32 bytes is the hash's own size.
MIN_FINGERPRINT_KEY_BYTES: Final = 32

# Keys that say they are not keys, looked for with case and punctuation ignored, so that
# "CHANGE_ME" and "change-me-in-production" (docker-compose.yml's old default) both match.
# Eight letters or more each: a random key contains one by chance practically never.
_PLACEHOLDERS: Final = (
    "changeme",
    "replaceme",
    "placeholder",
    "yoursecret",
    "notasecret",
    "development",
)
_NOT_ALPHANUMERIC: Final = re.compile(r"[^a-z0-9]")
_SANDBOX_NAME: Final = re.compile(r"sandbox(-.*)?")
_STRIPE_TEST_PREFIXES: Final = ("sk_test_", "rk_test_")
_ALIPAY_GATEWAY: Final = "https://openapi.alipay.com/gateway.do"
_ALIPAY_SANDBOX_DOMAIN: Final = "alipaydev.com"

_RANDOM_KEY_HINT: Final = (
    f"set it to a random secret of at least {MIN_FINGERPRINT_KEY_BYTES} bytes "
    "(e.g. `openssl rand -hex 32`)"
)


class Uses(Flag):
    """What a process does with its settings, so it is checked for that and no more."""

    NOTHING = 0
    FINGERPRINT_KEY = auto()  # fingerprints account numbers (consumer, facade)
    TLS = auto()  # serves HTTPS (facade)
    PROVIDERS = auto()  # calls payment providers (consumer, reconcile)
    SANDBOX_ACQUIRER = auto()  # is the sandbox acquirer (`paygate acquirer`)
    VAULT = auto()  # encrypts or decrypts account numbers (consumer, facade, `paygate keys`)
    NOTICES = auto()  # verifies providers' signed notifications (facade)
    # Opens the vault's data keys only, never an account number (`paygate webhooks run`,
    # for the webhook signing secrets): the key-encryption keys, without the account ones.
    VAULT_KEYS = auto()
    KAFKA = auto()  # sends commands or results over Kafka (consumer, facade)


@dataclass(frozen=True, slots=True)
class UnsafeSetting:
    """One unsafe value: the setting to change and what to change it to."""

    setting: str
    problem: str

    def __str__(self) -> str:
        return f"{self.setting} {self.problem}"


class UnsafeSettingsError(SystemExit):
    """Raised instead of starting: exits non-zero with the message alone, no traceback."""

    def __init__(self, command: str, unsafe: list[UnsafeSetting]) -> None:
        self.unsafe = unsafe
        super().__init__(refusal_message(command, unsafe))


def unsafe_settings(settings: Settings, uses: Uses) -> list[UnsafeSetting]:
    """Every development-only value among what ``uses`` reads; empty in development mode."""
    if settings.env is Environment.DEVELOPMENT:
        return []
    found: list[UnsafeSetting] = []
    if Uses.FINGERPRINT_KEY in uses:
        found += _fingerprint_key(settings)
    if Uses.TLS in uses:
        found += _tls(settings)
    if Uses.PROVIDERS in uses:
        found += _providers(settings)
    if Uses.VAULT in uses:
        found += _vault_kek(settings)
    elif Uses.VAULT_KEYS in uses:
        found += _key_encryption_keys(settings)
    if uses & (Uses.PROVIDERS | Uses.NOTICES):
        found += _alipay_dev_keys(settings)
    if Uses.PROVIDERS in uses:
        found += _alipay_gateway(settings)
        found += _stripe_api_base(settings)
        found += _stripe_test_key(settings)
    if Uses.NOTICES in uses:
        found += _stripe_webhook_secret(settings)
    if Uses.KAFKA in uses:
        found += _kafka_transport(settings)
    if Uses.SANDBOX_ACQUIRER in uses:
        found.append(
            UnsafeSetting(
                "PAYGATE_ENV",
                "is production: `paygate acquirer` is the sandbox acquirer, a test double "
                "that moves no money; run it only with PAYGATE_ENV=development",
            )
        )
    return found


def refuse_unsafe_settings(command: str, settings: Settings, uses: Uses) -> None:
    """Raise :class:`UnsafeSettingsError` if ``settings`` are unsafe for what ``uses`` reads."""
    unsafe = unsafe_settings(settings, uses)
    if unsafe:
        raise UnsafeSettingsError(command, unsafe)


def refusal_message(command: str, unsafe: list[UnsafeSetting]) -> str:
    which = (
        "this setting has a development value"
        if len(unsafe) == 1
        else "these settings have development values"
    )
    lines = [
        f"{command} refuses to start: PAYGATE_ENV is production (the default) and {which}:",
        *(f"  - {item}" for item in unsafe),
        "To try paygate out locally, run `paygate dev` or set PAYGATE_ENV=development.",
    ]
    return "\n".join(lines)


def _fingerprint_key(settings: Settings) -> list[UnsafeSetting]:
    key = settings.account_key
    setting = "PAYGATE_ACCOUNT_FINGERPRINT_KEY"
    if key == DEV_FINGERPRINT_KEY.encode():
        return [UnsafeSetting(setting, f"is the development default; {_RANDOM_KEY_HINT}")]
    normalised = _NOT_ALPHANUMERIC.sub("", key.decode(errors="replace").lower())
    if any(placeholder in normalised for placeholder in _PLACEHOLDERS):
        return [UnsafeSetting(setting, f"is a placeholder; {_RANDOM_KEY_HINT}")]
    if len(key) < MIN_FINGERPRINT_KEY_BYTES:
        return [UnsafeSetting(setting, f"is too short ({len(key)} bytes); {_RANDOM_KEY_HINT}")]
    return []


def _vault_kek(settings: Settings) -> list[UnsafeSetting]:
    found: list[UnsafeSetting] = []
    development_file = DEV_ACCOUNT_ENCRYPTION_KEY_FILE.resolve()
    # Resolved: `./.cache/...` or the absolute path names the same generated file.
    if any(path.resolve() == development_file for path in settings.account_encryption_key_files):
        found.append(
            UnsafeSetting(
                "PAYGATE_ACCOUNT_ENCRYPTION_KEY_FILES",
                "names the development key file, generated on a developer's machine; set it "
                "to your RSA-3072 private key, a PEM file of mode 0400 "
                "(`openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072`)",
            )
        )
    if settings.accept_clear_account_numbers:
        found.append(
            UnsafeSetting(
                "PAYGATE_ACCEPT_CLEAR_ACCOUNT_NUMBERS",
                "is on: clear account numbers would sit in the Kafka topics' log segments; "
                "have producers send tokens or encrypted numbers, and unset it",
            )
        )
    return found + _key_encryption_keys(settings)


_DEVELOPMENT_KEK_BYTES: Final = parse_keys(DEV_VAULT_KEK)[0][1]


def _key_encryption_keys(settings: Settings) -> list[UnsafeSetting]:
    # The keys as the vault will read them (the file wins over the setting): the development
    # key copied into a file is no less public than in the environment.
    try:
        text = settings.vault_kek_text
    except (OSError, UnicodeDecodeError):
        return []  # an unreadable file stops the process where it is read, at start
    if not _holds_development_kek(text):
        return []
    if settings.vault_kek_file is not None:
        return [
            UnsafeSetting(
                "PAYGATE_VAULT_KEK_FILE",
                "holds the development key-encryption key, which anyone with this "
                "repository can read: every stored account number would be readable; "
                "write a key of your own into it instead, `<id>:<64 hex digits>` "
                "(e.g. `kek-1:$(openssl rand -hex 32)`), or plug in a KMS",
            )
        ]
    return [
        UnsafeSetting(
            "PAYGATE_VAULT_KEK",
            "is (or still holds) the development key-encryption key, which anyone with "
            "this repository can read: every stored account number would be readable; "
            "set PAYGATE_VAULT_KEK_FILE to a file of `<id>:<64 hex digits>` "
            "(e.g. `kek-1:$(openssl rand -hex 32)`), or plug in a KMS",
        )
    ]


def _holds_development_kek(text: str) -> bool:
    """Whether ``text`` holds the development key, under its own id or any other."""
    if DEV_VAULT_KEK in text:
        return True
    try:
        return any(key == _DEVELOPMENT_KEK_BYTES for _kek_id, key in parse_keys(text))
    except KeyFormatError:
        return False  # malformed: refused where the keys are parsed, at start


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _tls(settings: Settings) -> list[UnsafeSetting]:
    if settings.tls_cert_file is not None:
        # The validator makes sure the key file comes with it. An unreadable file stops
        # the facade where it loads the pair, at start.
        pem = _read_bytes(settings.tls_cert_file)
        if pem is None or not is_development_certificate(pem):
            return []
        return [
            UnsafeSetting(
                "PAYGATE_TLS_CERT_FILE",
                "is the self-signed development certificate (CN=localhost, made in "
                "PAYGATE_TLS_DIR) that clients cannot verify; set it and "
                "PAYGATE_TLS_KEY_FILE to your certificate (chain) and private key, PEM files",
            )
        ]
    return [
        UnsafeSetting(
            "PAYGATE_TLS_CERT_FILE",
            "is unset, so the facade would serve a self-signed development certificate that "
            "clients cannot verify; set it and PAYGATE_TLS_KEY_FILE to your certificate "
            "(chain) and private key, PEM files",
        )
    ]


def _providers(settings: Settings) -> list[UnsafeSetting]:
    found: list[UnsafeSetting] = []
    routed = [n for names in settings.routes.values() for n in names if _is_sandbox(n)]
    if routed:
        found.append(UnsafeSetting("PAYGATE_ROUTES", _sends_to_sandbox(routed)))
    if DEFAULT_ROUTE not in settings.routes and _is_sandbox(settings.provider):
        found.append(UnsafeSetting("PAYGATE_PROVIDER", _sends_to_sandbox([settings.provider])))
    return found


def _is_sandbox(provider: str) -> bool:
    return _SANDBOX_NAME.fullmatch(provider) is not None


def _sends_to_sandbox(names: list[str]) -> str:
    named = ", ".join(f"`{name}`" for name in dict.fromkeys(names))
    return (
        f"sends payments to {named}, the sandbox acquirer: a test double that moves no "
        "money; name a real provider (e.g. `stripe`)"
    )


def _alipay_dev_keys(settings: Settings) -> list[UnsafeSetting]:
    # Generated test keys sit in a directory any process of a dev stack reads: whoever
    # reads it can sign "Alipay's" notifications, so a payment could be marked paid.
    found: list[UnsafeSetting] = []
    if settings.alipay_dev_keys_dir is not None:
        found.append(
            UnsafeSetting(
                "PAYGATE_ALIPAY_DEV_KEYS_DIR",
                "is set: it holds generated Alipay test keys for the sandbox's simulator; "
                "unset it and set PAYGATE_ALIPAY_APP_ID, PAYGATE_ALIPAY_APP_PRIVATE_KEY and "
                "PAYGATE_ALIPAY_PUBLIC_KEY to your Alipay app's",
            )
        )
    if settings.alipay_app_id == DEV_APP_ID:
        found.append(
            UnsafeSetting(
                "PAYGATE_ALIPAY_APP_ID",
                f"is `{DEV_APP_ID}`, the sandbox simulator's test app; set it to your "
                "Alipay app's id",
            )
        )
    return found


def _alipay_gateway(settings: Settings) -> list[UnsafeSetting]:
    # Alipay's gateway is https; a plain-http one is the sandbox's simulator (or a proxy
    # anyone on the path could answer for, forging what Alipay says).
    if "alipay" not in settings.provider_names:
        return []
    parts = urlsplit(settings.alipay_gateway_url)
    if parts.scheme != "https":
        return [
            UnsafeSetting(
                "PAYGATE_ALIPAY_GATEWAY_URL",
                "is not https (the sandbox's Alipay simulator?); set it to Alipay's gateway, "
                f"{_ALIPAY_GATEWAY} (the default)",
            )
        ]
    host = (parts.hostname or "").lower()
    if host == _ALIPAY_SANDBOX_DOMAIN or host.endswith("." + _ALIPAY_SANDBOX_DOMAIN):
        # Alipay's own sandbox (openapi.alipaydev.com, openapi-sandbox.dl.alipaydev.com):
        # https and real-looking, but its trades move no money, so a "paid" order is not.
        return [
            UnsafeSetting(
                "PAYGATE_ALIPAY_GATEWAY_URL",
                f"is Alipay's sandbox ({host}), whose trades move no money; set it to "
                f"Alipay's gateway, {_ALIPAY_GATEWAY} (the default)",
            )
        ]
    return []


def _stripe_api_base(settings: Settings) -> list[UnsafeSetting]:
    # Stripe's API is https; a plain-http base is stripe-mock, the tests' simulator (or a
    # proxy anyone on the path could answer for): no money would move, or the wrong answer.
    base = settings.stripe_api_base
    if base is None or "stripe" not in settings.provider_names:
        return []
    if urlsplit(base).scheme == "https":
        return []
    return [
        UnsafeSetting(
            "PAYGATE_STRIPE_API_BASE",
            "is not https (stripe-mock, the tests' simulator?); unset it to use Stripe's API",
        )
    ]


def _stripe_test_key(settings: Settings) -> list[UnsafeSetting]:
    # A test-mode key is accepted by Stripe's real API and answers like a live one, but no
    # money moves: every "succeeded" payment would be a goods-for-free order. Only the
    # prefix is looked at, and never echoed with the rest of the key.
    key = settings.stripe_api_key
    if key is None or "stripe" not in settings.provider_names:
        return []
    prefix = next((p for p in _STRIPE_TEST_PREFIXES if key.get_secret_value().startswith(p)), None)
    if prefix is None:
        return []
    return [
        UnsafeSetting(
            "PAYGATE_STRIPE_API_KEY",
            f"is a Stripe test-mode key ({prefix}...), with which no money moves; set it to "
            "your live secret key (sk_live_...) or a live restricted key (rk_live_...)",
        )
    ]


def _stripe_webhook_secret(settings: Settings) -> list[UnsafeSetting]:
    # Without Stripe's events, a charge Stripe's search shows only after the stray-charge
    # sweep's wait (its settle time plus the search lag) is never found nor given back.
    if "stripe" not in settings.provider_names or settings.stripe_webhook_secret is not None:
        return []
    return [
        UnsafeSetting(
            "PAYGATE_STRIPE_WEBHOOK_SECRET",
            "is unset while `stripe` is a provider: without Stripe's events a charge its "
            "search shows late is never reversed; add a webhook endpoint for the facade's "
            "/v1/notifications/stripe in Stripe's Dashboard (docs/operations.md) and set "
            "this to its signing secret (whsec_...)",
        )
    ]


_PLAINTEXT_KAFKA: Final = frozenset(
    {KafkaSecurityProtocol.PLAINTEXT, KafkaSecurityProtocol.SASL_PLAINTEXT}
)


def _kafka_transport(settings: Settings) -> list[UnsafeSetting]:
    # The commands carry tokens, amounts and the REST clients' ids, the results what
    # happened to every payment: on a network anyone can read (and with SASL_PLAINTEXT, the
    # login too). The development default, refused unless the operator says the links are
    # encrypted another way. A certificate that need not name its broker lets any
    # certificate the CAs signed stand in for it: never acceptable.
    found: list[UnsafeSetting] = []
    if settings.kafka_security_protocol in _PLAINTEXT_KAFKA and not settings.kafka_allow_plaintext:
        found.append(
            UnsafeSetting(
                "PAYGATE_KAFKA_SECURITY_PROTOCOL",
                f"is {settings.kafka_security_protocol.value}: commands and results would "
                "cross the network in clear; set SSL or SASL_SSL (docs/kafka.md), or "
                "PAYGATE_KAFKA_ALLOW_PLAINTEXT=true if you encrypt the links yourself",
            )
        )
    if not settings.kafka_ssl_check_hostname and (
        settings.kafka_security_protocol not in _PLAINTEXT_KAFKA
    ):
        found.append(
            UnsafeSetting(
                "PAYGATE_KAFKA_SSL_CHECK_HOSTNAME",
                "is false: any certificate the CAs signed would pass for a broker; set it "
                "to true (give the brokers certificates that name them)",
            )
        )
    return found
