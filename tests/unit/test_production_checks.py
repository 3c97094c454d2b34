"""Production refuses development secrets and settings; development mode allows them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from http_facade.tls import ensure_self_signed_certificate
from paygate import cli
from paygate.production_checks import (
    UnsafeSettingsError,
    Uses,
    refusal_message,
    refuse_unsafe_settings,
    unsafe_settings,
)
from paygate.settings import (
    DEV_ACCOUNT_ENCRYPTION_KEY_FILE,
    DEV_FINGERPRINT_KEY,
    DEV_VAULT_KEK,
    SECRETS_DIR_ENV,
    Environment,
    Settings,
)

pytestmark = pytest.mark.unit

GOOD_KEY = "3f1c9a7e5b2d4f608e1a3c5b7d9f0e2a4c6b8d0f1e3a5c7b9d2f4e6a8c0b1d3e"
EVERYTHING = Uses.FINGERPRINT_KEY | Uses.TLS | Uses.PROVIDERS | Uses.SANDBOX_ACQUIRER


def production(**fields: Any) -> Settings:
    """Settings a production deployment could run with, changed by ``fields``."""
    safe: dict[str, Any] = {
        "env": Environment.PRODUCTION,
        "account_fingerprint_key": GOOD_KEY,
        "tls_cert_file": Path("/etc/paygate/tls.crt"),
        "tls_key_file": Path("/etc/paygate/tls.key"),
        "provider": "stripe",
        "stripe_api_key": "sk_live_123",
        "stripe_webhook_secret": "whsec_0123456789abcdef",
        "abandon_after_s": 6 * 3600,
        "vault_kek": "kek-1:" + "ab" * 32,
        "account_encryption_key_files": [Path("/etc/paygate/account-encryption.pem")],
        "kafka_security_protocol": "SSL",
    }
    return Settings(**{**safe, **fields})


def settings_named(settings: Settings, uses: Uses) -> list[str]:
    return [item.setting for item in unsafe_settings(settings, uses)]


def test_production_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAYGATE_ENV", raising=False)
    assert Settings().env is Environment.PRODUCTION


@pytest.mark.parametrize(
    ("text", "chosen"),
    [("development", Environment.DEVELOPMENT), ("Production", Environment.PRODUCTION)],
)
def test_the_environment_is_read_in_any_case(
    monkeypatch: pytest.MonkeyPatch, text: str, chosen: Environment
) -> None:
    monkeypatch.setenv("PAYGATE_ENV", text)
    assert Settings().env is chosen


def test_an_unknown_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYGATE_ENV", "prod")
    with pytest.raises(ValidationError, match="env"):
        Settings()


def test_a_production_configuration_passes_every_check() -> None:
    assert unsafe_settings(production(), EVERYTHING & ~Uses.SANDBOX_ACQUIRER) == []


def test_the_defaults_are_refused_in_production_all_at_once() -> None:
    defaults = Settings(env=Environment.PRODUCTION)
    assert settings_named(defaults, EVERYTHING) == [
        "PAYGATE_ACCOUNT_FINGERPRINT_KEY",
        "PAYGATE_TLS_CERT_FILE",
        "PAYGATE_PROVIDER",
        "PAYGATE_ENV",
    ]


def test_development_mode_allows_every_development_value() -> None:
    assert unsafe_settings(Settings(env=Environment.DEVELOPMENT), EVERYTHING) == []


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (DEV_FINGERPRINT_KEY, "is the development default"),
        ("change-me-in-production", "is a placeholder"),
        ("CHANGE_ME_" + "0" * 40, "is a placeholder"),
        ("replace-me-with-a-long-random-secret-please", "is a placeholder"),
        ("paygate-development-fingerprint-key-2", "is a placeholder"),
        ("a" * 31, "is too short (31 bytes)"),
        ("s3cr3t", "is too short (6 bytes)"),
    ],
)
def test_unsafe_fingerprint_keys_are_named_with_what_to_do(key: str, problem: str) -> None:
    [unsafe] = unsafe_settings(production(account_fingerprint_key=key), Uses.FINGERPRINT_KEY)
    assert unsafe.setting == "PAYGATE_ACCOUNT_FINGERPRINT_KEY"
    assert unsafe.problem.startswith(problem)
    assert unsafe.problem.endswith(
        "set it to a random secret of at least 32 bytes (e.g. `openssl rand -hex 32`)"
    )


def test_the_message_for_the_development_key_reads_as_asked() -> None:
    [unsafe] = unsafe_settings(
        production(account_fingerprint_key=DEV_FINGERPRINT_KEY), Uses.FINGERPRINT_KEY
    )
    assert str(unsafe) == (
        "PAYGATE_ACCOUNT_FINGERPRINT_KEY is the development default; set it to a random "
        "secret of at least 32 bytes (e.g. `openssl rand -hex 32`)"
    )


def test_the_development_key_encryption_key_is_refused_naming_the_setting() -> None:
    [unsafe] = unsafe_settings(production(vault_kek=DEV_VAULT_KEK), Uses.VAULT)
    assert unsafe.setting == "PAYGATE_VAULT_KEK"
    assert "PAYGATE_VAULT_KEK_FILE" in unsafe.problem
    # Kept as a second, unwrap-only key, it is refused all the same.
    kept = production(vault_kek=f"kek-1:{'ab' * 32},{DEV_VAULT_KEK}")
    assert settings_named(kept, Uses.VAULT) == ["PAYGATE_VAULT_KEK"]
    assert unsafe_settings(production(vault_kek=f"kek-1:{'ab' * 32}"), Uses.VAULT) == []
    assert unsafe_settings(production(vault_kek_file=Path("/run/kek")), Uses.VAULT) == []
    assert unsafe_settings(Settings(env=Environment.DEVELOPMENT), Uses.VAULT) == []


def test_the_vaults_other_development_values_are_refused() -> None:
    defaults = production(account_encryption_key_files=[DEV_ACCOUNT_ENCRYPTION_KEY_FILE])
    assert settings_named(defaults, Uses.VAULT) == ["PAYGATE_ACCOUNT_ENCRYPTION_KEY_FILES"]
    clear = production(accept_clear_account_numbers=True)
    assert settings_named(clear, Uses.VAULT) == ["PAYGATE_ACCEPT_CLEAR_ACCOUNT_NUMBERS"]
    # Off unless asked for outside development; on by default in development.
    assert not production().clear_account_numbers_accepted
    assert Settings(env=Environment.DEVELOPMENT).clear_account_numbers_accepted


def test_a_32_byte_random_key_is_enough() -> None:
    assert unsafe_settings(production(account_fingerprint_key="k" * 32), Uses.FINGERPRINT_KEY) == []


def test_a_facade_without_certificate_files_is_refused() -> None:
    settings = production(tls_cert_file=None, tls_key_file=None)
    assert settings_named(settings, Uses.TLS) == ["PAYGATE_TLS_CERT_FILE"]
    assert "self-signed" in str(unsafe_settings(settings, Uses.TLS)[0])


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"provider": "sandbox"}, ["PAYGATE_PROVIDER"]),
        ({"provider": "sandbox-inprocess"}, ["PAYGATE_PROVIDER"]),
        ({"routes": {"card": ["stripe", "sandbox"], "*": ["stripe"]}}, ["PAYGATE_ROUTES"]),
        # No "*" route: PAYGATE_PROVIDER is the default route, and it is the sandbox.
        ({"provider": "sandbox", "routes": {"card": ["stripe"]}}, ["PAYGATE_PROVIDER"]),
        ({"provider": "sandbox", "routes": {"*": ["stripe"]}}, []),
        (
            {
                "routes": {"card": ["sandbox-2"], "*": ["stripe"]},
                "sandbox_urls": {"sandbox-2": "http://127.0.0.1:8082"},
            },
            ["PAYGATE_ROUTES"],
        ),
    ],
)
def test_the_sandbox_as_a_provider_is_refused(fields: dict[str, Any], named: list[str]) -> None:
    assert settings_named(production(**fields), Uses.PROVIDERS) == named


def test_each_process_is_checked_for_what_it_uses_only() -> None:
    # The consumer serves no HTTPS: it needs no certificate. The facade calls no provider.
    consumer_only = production(tls_cert_file=None, tls_key_file=None)
    assert unsafe_settings(consumer_only, cli.production_uses("consumer")) == []
    facade_only = production(provider="sandbox")
    assert unsafe_settings(facade_only, cli.production_uses("facade")) == []
    defaults = Settings(env=Environment.PRODUCTION)
    vault = ["PAYGATE_ACCOUNT_ENCRYPTION_KEY_FILES", "PAYGATE_VAULT_KEK"]
    assert settings_named(defaults, cli.production_uses("consumer")) == [
        "PAYGATE_ACCOUNT_FINGERPRINT_KEY",
        "PAYGATE_PROVIDER",
        *vault,
        "PAYGATE_KAFKA_SECURITY_PROTOCOL",
    ]
    assert settings_named(defaults, cli.production_uses("facade")) == [
        "PAYGATE_ACCOUNT_FINGERPRINT_KEY",
        "PAYGATE_TLS_CERT_FILE",
        *vault,
        "PAYGATE_KAFKA_SECURITY_PROTOCOL",
    ]
    assert settings_named(defaults, cli.production_uses("reconcile")) == [
        "PAYGATE_PROVIDER",
        *vault,
    ]
    assert settings_named(defaults, cli.production_uses("acquirer")) == ["PAYGATE_ENV"]
    for command in ("dev", "topics", "expire-keys"):
        assert unsafe_settings(defaults, cli.production_uses(command)) == []


def test_the_refusal_is_a_clean_exit_listing_every_setting() -> None:
    with pytest.raises(UnsafeSettingsError) as refused:
        refuse_unsafe_settings(
            "paygate facade", Settings(env=Environment.PRODUCTION), cli.production_uses("facade")
        )
    # SystemExit with a message: Python prints it alone and exits 1, without a traceback.
    assert isinstance(refused.value, SystemExit)
    assert refused.value.code == (
        "paygate facade refuses to start: PAYGATE_ENV is production (the default) and these "
        "settings have development values:\n"
        "  - PAYGATE_ACCOUNT_FINGERPRINT_KEY is the development default; set it to a random "
        "secret of at least 32 bytes (e.g. `openssl rand -hex 32`)\n"
        "  - PAYGATE_TLS_CERT_FILE is unset, so the facade would serve a self-signed "
        "development certificate that clients cannot verify; set it and PAYGATE_TLS_KEY_FILE "
        "to your certificate (chain) and private key, PEM files\n"
        "  - PAYGATE_ACCOUNT_ENCRYPTION_KEY_FILES names the development key file, generated "
        "on a developer's machine; set it to your RSA-3072 private key, a PEM file of mode "
        "0400 (`openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072`)\n"
        "  - PAYGATE_VAULT_KEK is (or still holds) the development key-encryption key, which "
        "anyone with this repository can read: every stored account number would be "
        "readable; set PAYGATE_VAULT_KEK_FILE to a file of `<id>:<64 hex digits>` (e.g. "
        "`kek-1:$(openssl rand -hex 32)`), or plug in a KMS\n"
        "  - PAYGATE_KAFKA_SECURITY_PROTOCOL is PLAINTEXT: commands and results would cross "
        "the network in clear; set SSL or SASL_SSL (docs/kafka.md), or "
        "PAYGATE_KAFKA_ALLOW_PLAINTEXT=true if you encrypt the links yourself\n"
        "To try paygate out locally, run `paygate dev` or set PAYGATE_ENV=development."
    )


def test_safe_settings_start() -> None:
    refuse_unsafe_settings("paygate consumer", production(), cli.production_uses("consumer"))


def test_generated_alipay_test_keys_are_refused_where_alipay_is_used() -> None:
    from paygate.alipay_dev import DEV_APP_ID

    dev_keys = production(alipay_dev_keys_dir=Path(".cache/alipay-dev"))
    for uses in (Uses.PROVIDERS, Uses.NOTICES):
        assert settings_named(dev_keys, uses) == ["PAYGATE_ALIPAY_DEV_KEYS_DIR"]
    assert settings_named(production(alipay_app_id=DEV_APP_ID), Uses.PROVIDERS) == [
        "PAYGATE_ALIPAY_APP_ID"
    ]
    assert settings_named(production(alipay_app_id="2021000000000002"), Uses.PROVIDERS) == []
    assert "PAYGATE_ALIPAY_DEV_KEYS_DIR" not in {
        item.setting for item in unsafe_settings(dev_keys, Uses.TLS | Uses.FINGERPRINT_KEY)
    }
    assert cli.production_uses("facade") & Uses.NOTICES
    development = Settings(env=Environment.DEVELOPMENT, alipay_dev_keys_dir=Path("keys"))
    assert unsafe_settings(development, Uses.PROVIDERS | Uses.NOTICES) == []


def test_alipay_through_a_plain_http_gateway_is_refused() -> None:
    routed = {"routes": {"alipay": ["alipay"]}}
    simulator = production(**routed, alipay_gateway_url="http://acquirer:8081/gateway.do")
    assert settings_named(simulator, Uses.PROVIDERS) == ["PAYGATE_ALIPAY_GATEWAY_URL"]
    assert settings_named(production(**routed), Uses.PROVIDERS) == []  # Alipay's own
    # Not routed to alipay: its gateway setting is not used, so not checked.
    assert (
        settings_named(production(alipay_gateway_url="http://x/gateway.do"), Uses.PROVIDERS) == []
    )


def test_a_key_encryption_key_file_holding_the_development_key_is_refused(
    tmp_path: Path,
) -> None:
    # The file wins over PAYGATE_VAULT_KEK: the development key copied into it is just as
    # public, and so is its key under another id, or kept after a key of one's own.
    dev_key_hex = DEV_VAULT_KEK.split(":", 1)[1]
    for text in (
        DEV_VAULT_KEK + "\n",
        f"kek-1:{dev_key_hex}",
        f"kek-2:{'ab' * 32}\n{DEV_VAULT_KEK}\n",
    ):
        kek_file = tmp_path / "kek"
        kek_file.write_text(text)
        [unsafe] = unsafe_settings(production(vault_kek_file=kek_file), Uses.VAULT)
        assert str(unsafe) == (
            "PAYGATE_VAULT_KEK_FILE holds the development key-encryption key, which anyone "
            "with this repository can read: every stored account number would be readable; "
            "write a key of your own into it instead, `<id>:<64 hex digits>` (e.g. "
            "`kek-1:$(openssl rand -hex 32)`), or plug in a KMS"
        )
        assert settings_named(production(vault_kek_file=kek_file), Uses.VAULT_KEYS) == [
            "PAYGATE_VAULT_KEK_FILE"
        ]
    kek_file.write_text(f"kek-1:{'ab' * 32}\n")
    assert unsafe_settings(production(vault_kek_file=kek_file), Uses.VAULT) == []
    # The file wins, so the development default of PAYGATE_VAULT_KEK left beside it is unused.
    beside = production(vault_kek_file=kek_file, vault_kek=DEV_VAULT_KEK)
    assert unsafe_settings(beside, Uses.VAULT) == []
    development = Settings(env=Environment.DEVELOPMENT, vault_kek_file=tmp_path / "dev")
    (tmp_path / "dev").write_text(DEV_VAULT_KEK)
    assert unsafe_settings(development, Uses.VAULT) == []


def test_the_development_key_under_another_id_is_refused_in_the_setting() -> None:
    renamed = production(vault_kek="kek-1:" + DEV_VAULT_KEK.split(":", 1)[1])
    assert settings_named(renamed, Uses.VAULT) == ["PAYGATE_VAULT_KEK"]


def test_the_development_key_file_is_refused_however_its_path_is_written() -> None:
    development = DEV_ACCOUNT_ENCRYPTION_KEY_FILE
    for written in (development.resolve(), Path(".cache/../") / development):
        named = production(account_encryption_key_files=[Path("/etc/paygate/a.pem"), written])
        assert settings_named(named, Uses.VAULT) == ["PAYGATE_ACCOUNT_ENCRYPTION_KEY_FILES"]


def test_the_self_signed_development_certificate_is_refused_from_any_file(
    tmp_path: Path,
) -> None:
    cert, key = ensure_self_signed_certificate(tmp_path / "tls")
    # Copied out of PAYGATE_TLS_DIR and named as if it were a real one: still refused.
    copied = tmp_path / "tls.crt"
    copied.write_bytes(cert.read_bytes())
    for named in (cert, copied):
        [unsafe] = unsafe_settings(production(tls_cert_file=named, tls_key_file=key), Uses.TLS)
        assert str(unsafe) == (
            "PAYGATE_TLS_CERT_FILE is the self-signed development certificate (CN=localhost, "
            "made in PAYGATE_TLS_DIR) that clients cannot verify; set it and "
            "PAYGATE_TLS_KEY_FILE to your certificate (chain) and private key, PEM files"
        )
    own = tmp_path / "own.crt"
    own.write_bytes(_certificate_for("pay.example.com"))
    assert unsafe_settings(production(tls_cert_file=own, tls_key_file=key), Uses.TLS) == []


def test_stripe_through_a_plain_http_api_base_is_refused() -> None:
    mock = production(stripe_api_base="http://127.0.0.1:12111")
    [unsafe] = unsafe_settings(mock, Uses.PROVIDERS)
    assert str(unsafe) == (
        "PAYGATE_STRIPE_API_BASE is not https (stripe-mock, the tests' simulator?); unset it "
        "to use Stripe's API"
    )
    assert (
        unsafe_settings(production(stripe_api_base="https://api.stripe.com"), Uses.PROVIDERS) == []
    )
    # Not routed to stripe: its base is not used, so not checked.
    unused = production(
        provider="alipay", alipay_app_id="2021000000000002", stripe_api_base="http://x"
    )
    assert "PAYGATE_STRIPE_API_BASE" not in settings_named(unused, Uses.PROVIDERS)
    assert unsafe_settings(mock, Uses.TLS | Uses.VAULT) == []


def _certificate_for(host: str) -> bytes:
    """A certificate issued by a (throwaway) CA to ``host``: what production serves."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example CA")])
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def test_development_secrets_given_as_files_of_the_secrets_dir_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Kubernetes Secret mounted at PAYGATE_SECRETS_DIR (the Helm chart's way) sets the
    # same settings as the environment: a development value there is refused the same.
    for name in ("PAYGATE_VAULT_KEK", "PAYGATE_VAULT_KEK_FILE", "PAYGATE_ACCOUNT_FINGERPRINT_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(SECRETS_DIR_ENV, str(tmp_path))
    (tmp_path / "PAYGATE_VAULT_KEK").write_text(DEV_VAULT_KEK + "\n")
    (tmp_path / "PAYGATE_ACCOUNT_FINGERPRINT_KEY").write_text(DEV_FINGERPRINT_KEY + "\n")
    settings = Settings(
        env=Environment.PRODUCTION,
        account_encryption_key_files=[Path("/etc/paygate/account-encryption.pem")],
    )
    assert settings_named(settings, Uses.VAULT | Uses.FINGERPRINT_KEY) == [
        "PAYGATE_ACCOUNT_FINGERPRINT_KEY",
        "PAYGATE_VAULT_KEK",
    ]


@pytest.mark.parametrize("prefix", ["sk_test_", "rk_test_"])
def test_a_stripe_test_mode_key_is_refused_naming_the_setting(prefix: str) -> None:
    secret = prefix + "4eC39HqLyjWDarjtT1zdp7dc"
    test_mode = production(stripe_api_key=secret)
    [unsafe] = unsafe_settings(test_mode, Uses.PROVIDERS)
    assert str(unsafe) == (
        f"PAYGATE_STRIPE_API_KEY is a Stripe test-mode key ({prefix}...), with which no money "
        "moves; set it to your live secret key (sk_live_...) or a live restricted key "
        "(rk_live_...)"
    )
    assert "4eC39Hq" not in refusal_message("paygate consumer", [unsafe])
    for live in ("sk_live_123", "rk_live_123"):
        assert unsafe_settings(production(stripe_api_key=live), Uses.PROVIDERS) == []
    # Where Stripe is not routed, its key is not used, so not checked; nor by the facade.
    unused = production(provider="alipay", alipay_app_id="2021000000000002", stripe_api_key=secret)
    assert "PAYGATE_STRIPE_API_KEY" not in settings_named(unused, Uses.PROVIDERS)
    assert unsafe_settings(test_mode, Uses.TLS | Uses.VAULT | Uses.NOTICES) == []
    development = test_mode.model_copy(update={"env": Environment.DEVELOPMENT})
    assert unsafe_settings(development, Uses.PROVIDERS) == []


def test_the_refusal_of_a_stripe_test_key_stops_the_consumer_command() -> None:
    with pytest.raises(UnsafeSettingsError) as refused:
        refuse_unsafe_settings(
            "paygate consumer", production(stripe_api_key="sk_test_abc"), Uses.PROVIDERS
        )
    assert "PAYGATE_STRIPE_API_KEY is a Stripe test-mode key" in str(refused.value)
    assert "sk_test_abc" not in str(refused.value)  # the prefix only, never the key


@pytest.mark.parametrize(
    "gateway",
    [
        "https://openapi.alipaydev.com/gateway.do",
        "https://openapi-sandbox.dl.alipaydev.com/gateway.do",
        "https://OPENAPI.ALIPAYDEV.COM:443/gateway.do",
    ],
)
def test_alipays_own_sandbox_gateway_is_refused(gateway: str) -> None:
    routed = {"routes": {"alipay": ["alipay"]}, "alipay_app_id": "2021000000000002"}
    [unsafe] = unsafe_settings(production(**routed, alipay_gateway_url=gateway), Uses.PROVIDERS)
    assert unsafe.setting == "PAYGATE_ALIPAY_GATEWAY_URL"
    assert "Alipay's sandbox" in unsafe.problem
    assert "https://openapi.alipay.com/gateway.do" in unsafe.problem
    # A host that only ends with the same letters is not Alipay's sandbox.
    lookalike = production(**routed, alipay_gateway_url="https://notalipaydev.com/gateway.do")
    assert settings_named(lookalike, Uses.PROVIDERS) == []


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_kafka_in_clear_is_refused_unless_the_operator_encrypts_the_links(protocol: str) -> None:
    extra: dict[str, Any] = {}
    if protocol.startswith("SASL"):
        extra = {"kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "paygate"}
        extra["kafka_sasl_password"] = "secret"
    in_clear = production(kafka_security_protocol=protocol, **extra)
    for command in ("consumer", "facade"):
        assert settings_named(in_clear, cli.production_uses(command)) == [
            "PAYGATE_KAFKA_SECURITY_PROTOCOL"
        ]
    # reconcile and the tools talk to the database and providers only.
    assert settings_named(in_clear, cli.production_uses("reconcile")) == []
    acknowledged = production(kafka_security_protocol=protocol, kafka_allow_plaintext=True, **extra)
    assert settings_named(acknowledged, cli.production_uses("consumer")) == []
    assert (
        settings_named(
            in_clear.model_copy(update={"env": Environment.DEVELOPMENT}), EVERYTHING | Uses.KAFKA
        )
        == []
    )


def test_a_broker_certificate_that_need_not_name_its_broker_is_refused() -> None:
    unchecked = production(kafka_ssl_check_hostname=False)
    assert settings_named(unchecked, cli.production_uses("consumer")) == [
        "PAYGATE_KAFKA_SSL_CHECK_HOSTNAME"
    ]
    # No acknowledgement lifts it: nothing is gained by accepting any certificate.
    both = production(kafka_ssl_check_hostname=False, kafka_allow_plaintext=True)
    assert settings_named(both, cli.production_uses("facade")) == [
        "PAYGATE_KAFKA_SSL_CHECK_HOSTNAME"
    ]


def test_the_facade_refuses_stripe_without_its_webhook_secret_naming_the_setting() -> None:
    unset = production(stripe_webhook_secret=None)
    [unsafe] = unsafe_settings(unset, cli.production_uses("facade"))
    assert str(unsafe) == (
        "PAYGATE_STRIPE_WEBHOOK_SECRET is unset while `stripe` is a provider: without "
        "Stripe's events a charge its search shows late is never reversed; add a webhook "
        "endpoint for the facade's /v1/notifications/stripe in Stripe's Dashboard "
        "(docs/operations.md) and set this to its signing secret (whsec_...)"
    )
    assert unsafe_settings(production(), cli.production_uses("facade")) == []
    # Only the facade receives the events; without stripe routed, no secret is needed.
    assert unsafe_settings(unset, cli.production_uses("consumer")) == []
    no_stripe = production(stripe_webhook_secret=None, routes={"*": ["alipay"]})
    assert "PAYGATE_STRIPE_WEBHOOK_SECRET" not in settings_named(no_stripe, Uses.NOTICES)
    development = unset.model_copy(update={"env": Environment.DEVELOPMENT})
    assert unsafe_settings(development, Uses.NOTICES) == []


def test_a_stripe_webhook_secret_must_be_one_and_is_never_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from paygate.settings_errors import SettingsRefused, load_settings

    monkeypatch.setenv("PAYGATE_STRIPE_WEBHOOK_SECRET", "sk_live_pasted_by_mistake")
    with pytest.raises(SettingsRefused) as refused:
        load_settings("paygate facade")
    assert "PAYGATE_STRIPE_WEBHOOK_SECRET: " in str(refused.value)
    assert "starts with whsec_" in str(refused.value)
    assert "pasted_by_mistake" not in str(refused.value)
    monkeypatch.setenv("PAYGATE_STRIPE_WEBHOOK_SECRET", "whsec_abcdefghijklmnopqrstuvwxyz012345")
    assert load_settings("paygate facade").stripe_webhook_secret is not None


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        # whsec_${SECRET} with the variable unset: a key everyone knows signs any event.
        ("whsec_", "at least 16 characters"),
        ("whsec_guessable", "at least 16 characters"),
        ("whsec_abcdefghijklmnopqrstuvwxyz012345 ", "no spaces or line breaks"),
    ],
)
def test_a_guessable_or_mangled_stripe_webhook_secret_is_refused_unechoed(
    monkeypatch: pytest.MonkeyPatch, secret: str, why: str
) -> None:
    # Guard: providers.signing_secrets through Settings._stripe_signing_secret.
    from paygate.settings_errors import SettingsRefused, load_settings

    monkeypatch.setenv("PAYGATE_STRIPE_WEBHOOK_SECRET", secret)
    with pytest.raises(SettingsRefused) as refused:
        load_settings("paygate facade")
    assert "PAYGATE_STRIPE_WEBHOOK_SECRET: " in str(refused.value)
    assert why in str(refused.value)
    assert "guessable" not in str(refused.value)
    assert "abcdefghijklmnop" not in str(refused.value)
