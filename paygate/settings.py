"""Settings, read from the environment (``PAYGATE_*``; ``KAFKA_BOOTSTRAP_SERVERS`` as is).

Every field has a description: the README's settings table is generated from them.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from providers.routing import DEFAULT_ROUTE, Router

# Only for local development: production must set PAYGATE_ACCOUNT_FINGERPRINT_KEY, or
# fingerprints would be computable by anyone who reads this file.
DEV_FINGERPRINT_KEY = "paygate-development-fingerprint-key"

# Extra sandbox acquirers (PAYGATE_SANDBOX_URLS) are named sandbox-<suffix>.
_SANDBOX_NAME = re.compile(r"sandbox-[a-z0-9][a-z0-9-]{0,23}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYGATE_", extra="ignore", frozen=True)

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "PAYGATE_KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka brokers, host:port[,host:port]. Unset: `paygate dev` starts a "
        "local broker.",
    )
    commands_topic: str = Field("payments.commands", description="Topic of payment commands.")
    results_topic: str = Field("payments.results", description="Topic of result events.")
    dlq_topic: str = Field(
        "payments.commands.dlq", description="Dead-letter topic for commands that never decode."
    )
    topic_partitions: int = Field(3, ge=1, description="Partitions of topics paygate creates.")
    consumer_group: str = Field("paygate-consumer", description="Consumer group of the consumer.")
    max_in_flight: int = Field(
        100,
        ge=1,
        description="Commands processed at once per consumer; one order's commands always "
        "run one after another.",
    )
    max_poll_interval_ms: int = Field(
        300_000,
        ge=1000,
        description="Kafka's max.poll.interval.ms for the consumer. The runner keeps polling "
        "while work is in flight, so slow providers do not trigger rebalances.",
    )
    drain_timeout_s: float = Field(
        10.0,
        gt=0,
        description="On shutdown or partition revocation, how long work in flight may finish "
        "before it is abandoned (and redelivered to the next owner).",
    )

    database_url: str = Field(
        "sqlite+aiosqlite:///paygate.db",
        description="SQLAlchemy async URL: a SQLite file by default; "
        "postgresql+asyncpg://user:pass@host/db in production.",
    )
    account_fingerprint_key: SecretStr = Field(
        SecretStr(DEV_FINGERPRINT_KEY),
        description="Secret key of the account-number fingerprints (HMAC-SHA256). Set it in "
        "production; the default is for development only.",
    )

    provider: str = Field(
        "sandbox",
        description="Payment provider: `sandbox` (the acquirer over HTTP), `sandbox-inprocess` "
        "or `stripe`; the default route when `PAYGATE_ROUTES` has no `*` key.",
    )
    routes: dict[str, list[str]] = Field(
        default={},
        description='JSON: payment routes, e.g. `{"card:EUR": ["stripe", "sandbox"], '
        '"*": ["sandbox"]}`; a key is `method:CUR`, `method` or `*` (most specific wins), a '
        "value the providers to try in order. Failover to the next one only when a call "
        "certainly did not charge. Empty: every payment to `PAYGATE_PROVIDER`.",
    )
    sandbox_url: str = Field(
        "http://127.0.0.1:8081", description="Base URL of the sandbox acquirer service."
    )
    sandbox_urls: dict[str, str] = Field(
        default={},
        description='JSON: more sandbox acquirers by provider name, e.g. `{"sandbox-2": '
        '"http://127.0.0.1:8082"}`; names are `sandbox-<suffix>`, usable in `PAYGATE_ROUTES`.',
    )
    stripe_api_key: SecretStr | None = Field(
        default=None,
        description="Stripe secret API key (sk_test_... or sk_live_...); required when "
        "`stripe` is a provider (PAYGATE_PROVIDER or PAYGATE_ROUTES).",
    )
    stripe_api_base: str | None = Field(
        default=None,
        description="Base URL of Stripe's API; unset: Stripe's own. Tests point it at stripe-mock.",
    )
    provider_timeout_s: float = Field(
        10.0, gt=0, description="Seconds before a provider call counts as timed out (pending)."
    )

    provider_max_attempts: int = Field(
        4,
        ge=1,
        description="Provider calls per payment when providers certainly did not charge "
        "(5xx, refused, 429), failovers included; then the payment fails.",
    )
    retry_base_delay_s: float = Field(
        0.5, gt=0, description="First back-off before retrying a provider (doubles, jittered)."
    )
    retry_max_delay_s: float = Field(30.0, gt=0, description="Longest back-off between retries.")
    reconcile_interval_s: float = Field(
        10.0, gt=0, description="Seconds between the consumer's reconciliation passes."
    )
    reconcile_min_age_s: float = Field(
        30.0,
        gt=0,
        description="In-doubt attempts younger than this are left alone (they may still be "
        "in flight); keep it above the provider timeout.",
    )
    abandon_after_s: float = Field(
        3600.0,
        gt=0,
        description="An attempt the provider never received is failed after this long.",
    )

    idempotency_key_retention_days: float = Field(
        7.0,
        ge=7.0,
        description="How long an idempotency key stands for its payment (at least 7 days); "
        "after that the key may be used for a new payment.",
    )
    key_expiry_interval_s: float = Field(
        3600.0,
        gt=0,
        description="Seconds between runs of the housekeeping jobs (idempotency key expiry, "
        "outbox pruning).",
    )
    outbox_retention_days: float = Field(
        7.0,
        gt=0,
        description="Published outbox rows older than this are deleted (the events are in "
        "Kafka by then).",
    )
    outbox_lease_s: float = Field(
        15.0,
        gt=0,
        description="Seconds an outbox relay's lease lasts: only its holder publishes result "
        "events, and renews it before every batch. After a crash of the holder another "
        "consumer's relay takes over within this (plus the renewal interval); keep it well "
        "above the time a batch of 500 events takes to publish.",
    )
    outbox_lease_renew_s: float = Field(
        1.0,
        gt=0,
        description="Seconds between lease attempts: a relay without the lease tries to take "
        "it this often (so it takes over this soon after the holder stopped), the holder "
        "renews it at least this often; at most a third of `PAYGATE_OUTBOX_LEASE_S`.",
    )

    http_host: str = Field("127.0.0.1", description="Address the HTTPS facade binds.")
    http_port: int = Field(8443, ge=0, le=65535, description="Port of the HTTPS facade.")
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate (chain) of the facade. Unset: self-signed."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of the facade.")
    tls_dir: Path = Field(
        Path(".cache/tls"), description="Where the self-signed certificate is kept."
    )
    tls_reload_interval_s: float = Field(
        60.0,
        gt=0,
        description="Seconds between checks of the certificate files; a changed, valid pair "
        "is served to new connections without a restart (SIGHUP checks at once).",
    )
    max_wait_s: float = Field(
        30.0, ge=1, le=30.0, description="Upper bound of `Prefer: wait=N` on POST /v1/payments."
    )
    publish_timeout_s: float = Field(
        5.0,
        gt=0,
        le=60,
        description="Seconds a facade request may take to hand its command to Kafka (acks from "
        "all in-sync replicas); then it is answered `503 service_unavailable` with "
        "`Retry-After`. The command may still reach Kafka later: a retry with the same "
        "Idempotency-Key is the same payment.",
    )
    http_idle_timeout_s: float = Field(
        15.0,
        gt=0,
        description="Seconds an HTTPS connection may stay idle, or take to send a request's "
        "headers, before the facade closes it. A proxy in front should drop idle upstream "
        "connections sooner.",
    )
    http_body_timeout_s: float = Field(
        15.0,
        gt=0,
        description="Seconds a client has to send a request body once its headers arrived; "
        "then 408 and the connection is closed.",
    )
    api_key_cache_s: float = Field(
        5.0,
        ge=0,
        le=60,
        description="Seconds a facade instance caches a successful API-key lookup, so a "
        "revoked key keeps working at most this long; 0: look up every request.",
    )
    rate_limit_per_s: float = Field(
        25.0,
        gt=0,
        description="Requests per second each client may make, per facade instance "
        "(token bucket refill rate).",
    )
    rate_limit_burst: int = Field(
        50, ge=1, description="Requests a client may make at once before the rate applies."
    )

    acquirer_host: str = Field("127.0.0.1", description="Address the sandbox acquirer binds.")
    acquirer_port: int = Field(8081, ge=0, le=65535, description="Port of the sandbox acquirer.")
    acquirer_ledger: Path = Field(
        Path("sandbox-ledger.db"), description="SQLite file of the sandbox acquirer's ledger."
    )

    metrics_host: str = Field("127.0.0.1", description="Address of the consumer's /metrics.")
    metrics_port: int = Field(
        9102, ge=0, le=65535, description="Port of the consumer's /metrics and /healthz."
    )
    log_level: str = Field("INFO", description="Log level of the JSON logs on stderr.")

    @model_validator(mode="after")
    def _reconcile_windows(self) -> Settings:
        if self.reconcile_min_age_s <= self.provider_timeout_s:
            raise ValueError("PAYGATE_RECONCILE_MIN_AGE_S must exceed PAYGATE_PROVIDER_TIMEOUT_S")
        if self.abandon_after_s <= 2 * self.reconcile_min_age_s:
            raise ValueError(
                "PAYGATE_ABANDON_AFTER_S must exceed twice PAYGATE_RECONCILE_MIN_AGE_S"
            )
        return self

    @model_validator(mode="after")
    def _outbox_lease_renewed_in_time(self) -> Settings:
        # A holder needs half the lease left to publish a batch (persistence.outbox_lease):
        # renewals must come well inside it.
        if self.outbox_lease_renew_s * 3 > self.outbox_lease_s:
            raise ValueError(
                "PAYGATE_OUTBOX_LEASE_RENEW_S must be at most a third of PAYGATE_OUTBOX_LEASE_S"
            )
        return self

    @model_validator(mode="after")
    def _stripe_windows(self) -> Settings:
        # Stripe's search (used to find an attempt by its key) can lag by up to an hour,
        # and Stripe keeps idempotency keys 24 hours while the handler resends attempts
        # younger than half of abandon_after: see docs/providers.md.
        if "stripe" in self.provider_names and not 4 * 3600 <= self.abandon_after_s <= 48 * 3600:
            raise ValueError(
                "with stripe as a provider, PAYGATE_ABANDON_AFTER_S must be between 14400 "
                "(4 h) and 172800 (48 h)"
            )
        return self

    @model_validator(mode="after")
    def _routes_well_formed(self) -> Settings:
        Router(self.effective_routes)  # raises RoutingError (a ValueError) when malformed
        for name in self.sandbox_urls:
            if not _SANDBOX_NAME.fullmatch(name) or name == "sandbox-inprocess":
                raise ValueError(
                    f"PAYGATE_SANDBOX_URLS: {name!r} is not a sandbox name (sandbox-<suffix>)"
                )
        return self

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both PAYGATE_TLS_CERT_FILE and PAYGATE_TLS_KEY_FILE, or neither")
        return self

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise SystemExit(
                "KAFKA_BOOTSTRAP_SERVERS is not set (run `paygate dev` to start a local broker)"
            )
        return self.kafka_bootstrap_servers

    @property
    def effective_routes(self) -> dict[str, list[str]]:
        """``routes``, with ``provider`` as the default route unless ``routes`` has one."""
        return {DEFAULT_ROUTE: [self.provider], **self.routes}

    @property
    def provider_names(self) -> list[str]:
        """Every provider the routes name."""
        return list(dict.fromkeys(n for names in self.effective_routes.values() for n in names))

    @property
    def account_key(self) -> bytes:
        return self.account_fingerprint_key.get_secret_value().encode()


def settings_table() -> str:
    """The settings as a Markdown table, for the README."""
    lines = ["| environment variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        env = alias.choices[0] if isinstance(alias, AliasChoices) else f"PAYGATE_{name.upper()}"
        default = field.default
        if isinstance(default, SecretStr):
            default = "(development key)"
        shown = "(unset)" if default is None else f"`{default}`"
        lines.append(f"| `{env}` | {shown} | {field.description} |")
    return "\n".join(lines) + "\n"
