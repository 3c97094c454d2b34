"""Settings, read from the environment (``PAYGATE_*``; ``KAFKA_BOOTSTRAP_SERVERS`` as is).

Every field has a description: the README's settings table is generated from them.

Secrets may come from files instead: when ``PAYGATE_SECRETS_DIR`` names a directory, a
file there named like a setting's variable (``PAYGATE_DATABASE_URL``, any case) holds its
value, as a Kubernetes Secret mounted as a volume lays them out. The environment wins over
a file.
"""

from __future__ import annotations

import json
import os
import re
from enum import StrEnum
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

from domain.resend_window import DEFAULT_RESEND_LIMIT
from domain.retry import RetryPolicy
from paygate.jsonlog import DEFAULT_ACCOUNT_FIELDS
from persistence.engine import SqliteSynchronous
from providers.retry_after import MAX_RETRY_AFTER_S
from providers.routing import DEFAULT_ROUTE, Router
from providers.signing_secrets import stripe_signing_secret_problem

# Only for local development: production must set PAYGATE_ACCOUNT_FINGERPRINT_KEY, or
# fingerprints would be computable by anyone who reads this file. Production refuses it
# (paygate.production_checks).
DEV_FINGERPRINT_KEY = "paygate-development-fingerprint-key"
# Only for local development, likewise: the vault's key-encryption key (`<id>:<hex>`),
# written here so `make dev` needs no key set-up. Production refuses it.
DEV_VAULT_KEK = "development:" + "00112233445566778899aabbccddeeff" * 2
# Generated there at first use in development (vault.account_key_pair).
DEV_ACCOUNT_ENCRYPTION_KEY_FILE = Path(".cache/account-encryption-key.pem")


class Environment(StrEnum):
    """Where paygate runs: production refuses development secrets and settings."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


class EventLoop(StrEnum):
    """The asyncio event loop implementation every paygate process runs on."""

    ASYNCIO = "asyncio"
    UVLOOP = "uvloop"


# A directory of files named like settings' variables, each holding that setting's value.
SECRETS_DIR_ENV = "PAYGATE_SECRETS_DIR"

# Extra sandbox acquirers (PAYGATE_SANDBOX_URLS) are named sandbox-<suffix>.
_SANDBOX_NAME = re.compile(r"sandbox-[a-z0-9][a-z0-9-]{0,23}")


class KafkaSecurityProtocol(StrEnum):
    """Kafka's ``security.protocol``: TLS or not, SASL login or not."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class KafkaSaslMechanism(StrEnum):
    """The SASL mechanisms paygate supports (Kerberos and OAuth are not wired)."""

    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYGATE_", extra="ignore", frozen=True)

    env: Environment = Field(
        Environment.PRODUCTION,
        description="`production`: the consumer, facade, reconcile and acquirer refuse to start "
        "while a setting they use has a development value (the development fingerprint key, "
        "a placeholder or a key under 32 bytes, no TLS certificate files, the sandbox as "
        "provider) and list each one. `development`: allowed; `paygate dev` and the tests "
        "run so.",
    )

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "PAYGATE_KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka brokers, host:port[,host:port]. Unset: `paygate dev` starts a "
        "local broker.",
    )
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        KafkaSecurityProtocol.PLAINTEXT,
        description="How every Kafka client paygate makes connects: `PLAINTEXT`, `SSL`, "
        "`SASL_PLAINTEXT` or `SASL_SSL` (a company cluster: TLS and a login). See "
        "docs/kafka.md.",
    )
    kafka_sasl_mechanism: KafkaSaslMechanism | None = Field(
        None,
        description="SASL mechanism with `SASL_*` protocols: `PLAIN`, `SCRAM-SHA-256` or "
        "`SCRAM-SHA-512`.",
    )
    kafka_sasl_username: str | None = Field(
        None, description="SASL user name (with `SASL_*` protocols)."
    )
    kafka_sasl_password: SecretStr | None = Field(
        None,
        description="SASL password; prefer `PAYGATE_KAFKA_SASL_PASSWORD_FILE`. Never logged.",
    )
    kafka_sasl_password_file: Path | None = Field(
        None,
        description="File holding the SASL password (a mounted secret; one trailing newline "
        "is ignored), read at start; exclusive with `PAYGATE_KAFKA_SASL_PASSWORD`.",
    )
    kafka_ssl_ca_file: Path | None = Field(
        None,
        description="PEM file of the CAs that sign the brokers' certificates (`SSL`, "
        "`SASL_SSL`). Unset: the system's trust store.",
    )
    kafka_ssl_cert_file: Path | None = Field(
        None,
        description="PEM client certificate (chain) for mutual TLS; set with "
        "`PAYGATE_KAFKA_SSL_KEY_FILE`.",
    )
    kafka_ssl_key_file: Path | None = Field(
        None, description="PEM private key of `PAYGATE_KAFKA_SSL_CERT_FILE` (unencrypted)."
    )
    kafka_ssl_check_hostname: bool = Field(
        True,
        description="Whether a broker's certificate must name the host it was reached by. "
        "The certificate is verified against the CAs either way. Refused `false` in "
        "production.",
    )
    kafka_allow_plaintext: bool = Field(
        False,
        description="Production only: accept `PLAINTEXT` or `SASL_PLAINTEXT` Kafka, for a "
        "network whose links you encrypt yourself (a service mesh's mutual TLS). Unset, "
        "production refuses them: commands and results would cross the network in clear "
        "(and with `SASL_PLAINTEXT`, the login).",
    )
    kafka_linger_ms: int = Field(
        0,
        ge=0,
        le=1000,
        description="Milliseconds a record the facade or the consumer publishes waits for "
        "others to share its request. A create-and-wait crosses two producers (the facade's "
        "command, the relay's result) and pays this twice when traffic is light. 0: a "
        "record is sent at once when no request is in flight, and the records that arrive "
        "while one is share the next (the producer sends one request per broker at a time); "
        "a value above 0 makes fewer, larger requests when traffic is heavy. Durability is "
        "the same either way (`acks=all`, idempotent). See docs/performance.md.",
    )
    commands_topic: str = Field("payments.commands", description="Topic of payment commands.")
    results_topic: str = Field("payments.results", description="Topic of result events.")
    dlq_topic: str = Field(
        "payments.commands.dlq",
        description="Dead-letter topic for commands that can never be processed.",
    )
    schema_registry_url: str | None = Field(
        None,
        description="Base URL of a Confluent-API Schema Registry (Apicurio: "
        "`http://host:8080/apis/ccompat/v7`). Set: paygate registers its schemas there at "
        "start and reads any writer id the registry knows. Unset: the ids of "
        "`schemas/schema_ids.json` (no registry needed). See docs/kafka.md.",
    )
    schema_registry_timeout_s: float = Field(
        5.0,
        gt=0,
        le=60,
        description="Seconds one Schema Registry request may take (registration at start, "
        "the fetch of a writer schema first seen in a message).",
    )
    topic_partitions: int = Field(
        3,
        ge=1,
        description="Partitions of the topics `paygate topics` creates (the most consumer "
        "processes that share the work).",
    )
    topic_replication_factor: int = Field(
        1,
        ge=1,
        description="Replicas of each topic `paygate topics` creates: 1 for a one-broker "
        "development cluster; 3 in production (docs/kafka.md).",
    )
    topic_min_insync_replicas: int = Field(
        1,
        ge=1,
        description="`min.insync.replicas` of those topics: how many replicas must hold a "
        "record before an acks=all write succeeds. 1 in development; 2 in production, so "
        "one broker can be lost without losing an acknowledged command or result.",
    )
    topic_retention_ms: int = Field(
        604_800_000,
        ge=3_600_000,
        description="`retention.ms` of the command and result topics (7 days): how long a "
        "stopped consumer or a new facade can catch up.",
    )
    dlq_retention_ms: int = Field(
        2_592_000_000,
        ge=3_600_000,
        description="`retention.ms` of the dead-letter topic (30 days): dead letters wait "
        "for a person (`paygate dlq`).",
    )
    consumer_group: str = Field("paygate-consumer", description="Consumer group of the consumer.")
    max_in_flight: int = Field(
        200,
        ge=1,
        description="Commands processed at once per consumer; one order's commands always "
        "run one after another. Above `PAYGATE_MAX_PROVIDER_CALLS`, so the next commands' "
        "database writes overlap the provider calls in flight.",
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
    max_handling_attempts: int = Field(
        8,
        ge=1,
        description="Tries a command gets when handling it fails for an unexpected reason; "
        "after the last (about 11 s of back-off with the default) it goes to the dead-letter "
        "topic as `retries_exhausted`. A value the database refuses or a broken rule is "
        "dead-lettered at once; an unreachable database or broker is retried without limit.",
    )

    database_url: str = Field(
        "sqlite+aiosqlite:///paygate.db",
        description="SQLAlchemy async URL: a SQLite file by default; "
        "postgresql+asyncpg://user:pass@host/db in production.",
    )
    sqlite_synchronous: SqliteSynchronous = Field(
        SqliteSynchronous.FULL,
        description="SQLite only (PostgreSQL ignores it): `full` syncs every commit to disk. "
        "`normal` is an opt-in, faster (docs/performance.md has the figures) but an OS crash "
        "or power loss can undo the last commits, among them a payment's outcome whose "
        "Kafka offset was already committed: Kafka does not redeliver that command, so the "
        "outcome is lost. Choose `normal` only where that is acceptable (tests, benchmarks, "
        "a disk with power-loss protection).",
    )
    sqlite_write_lock_poll_ms: int = Field(
        0,
        ge=0,
        le=1000,
        description="SQLite only: above 0, a process's writer queue takes the database's "
        "write lock in tries of this many ms, one after another, instead of with SQLite's "
        "back-off (1, 2, 5, 10 ... 100 ms between tries), so a write waiting for another "
        "process's commit starts within about a millisecond of it. Costs the waiting "
        "process a round trip to the driver's thread per try. 0: SQLite's back-off. See "
        "docs/performance.md.",
    )
    account_fingerprint_key: SecretStr = Field(
        SecretStr(DEV_FINGERPRINT_KEY),
        description="Secret key of the account-number fingerprints (HMAC-SHA256): in "
        "production a random secret of at least 32 bytes (`openssl rand -hex 32`); the "
        "default is for development only and refused in production.",
    )

    provider: str = Field(
        "sandbox",
        description="Payment provider: `sandbox` (the acquirer over HTTP), `sandbox-inprocess` "
        "or `stripe`; the default route when `PAYGATE_ROUTES` has no `*` key. The sandboxes "
        "move no money: production refuses them.",
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
        description="Stripe secret API key (sk_live_... or rk_live_...; a test-mode key, "
        "sk_test_... or rk_test_..., only with PAYGATE_ENV=development); required when "
        "`stripe` is a provider (PAYGATE_PROVIDER or PAYGATE_ROUTES).",
    )
    stripe_api_base: str | None = Field(
        default=None,
        description="Base URL of Stripe's API; unset: Stripe's own. Tests point it at stripe-mock.",
    )
    provider_timeout_s: float = Field(
        10.0, gt=0, description="Seconds before a provider call counts as timed out (pending)."
    )

    provider_max_attempts: int | None = Field(
        None,
        ge=1,
        description="Most provider calls per payment when providers certainly did not charge "
        "(5xx, refused, 429), failovers included; then the payment fails. Unset: as many as "
        "`PAYGATE_PROVIDER_RETRY_BUDGET_S` allows. Both limits apply when both are set.",
    )
    provider_retry_budget_s: float = Field(
        90.0,
        ge=0,
        le=3600,
        description="Seconds of back-off a payment waits, at least, for providers that "
        "certainly did not charge before it fails `provider_unavailable`: an outage this long "
        "is ridden out. The payment holds an in-flight slot meanwhile; see "
        "docs/reliability.md for the upper bound. 0: no retries.",
    )
    retry_base_delay_s: float = Field(
        0.5,
        gt=0,
        description="First back-off before retrying a provider (doubles, jittered over the "
        "upper half of each step).",
    )
    retry_max_delay_s: float = Field(
        10.0,
        gt=0,
        description="Longest back-off between retries: also the longest a payment waits, "
        "after a provider came back, for its next try.",
    )
    provider_max_retry_after_s: float = Field(
        30.0,
        ge=0,
        le=MAX_RETRY_AFTER_S,
        description="Longest wait a provider's `Retry-After` is honoured with: longer or "
        "infinite ones are cut to it, unreadable ones (NaN, negative, garbage) ignored; at "
        f"most {MAX_RETRY_AFTER_S:g}.",
    )
    circuit_failure_threshold: int = Field(
        5,
        ge=0,
        description="Consecutive calls to one provider that certainly did not charge (refused, "
        "503, 429) that open its circuit: while open, charges, captures and refunds to it "
        "fail fast without calling it. Timeouts do not count. 0: no circuit breaker.",
    )
    circuit_open_s: float = Field(
        5.0,
        gt=0,
        le=MAX_RETRY_AFTER_S,
        description="Seconds a provider's circuit stays open; then one probe call is let "
        "through, and its success closes the circuit.",
    )
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
        description="An attempt the provider never received, and that cannot be re-sent (it "
        "carries no sealed command: begun before attempts carried one; or the vault no longer "
        "opens its accounts), is failed after this long plus its provider's declared search "
        "lag (status_search_lag; Stripe: 2 h): the age past which the provider's silence is "
        "final. Not a re-send limit: an attempt is re-sent only while its "
        "provider honours its key (Stripe: 24 h, less a 1 h margin), and one past that is "
        "never failed on silence but left pending for an operator (alert "
        "PaygateResendWithheld).",
    )
    resend_limit: int = Field(
        DEFAULT_RESEND_LIMIT,
        ge=1,
        description="How often an in-doubt payment's key may be sent again while its provider "
        "holds nothing under it, at a provider that keeps keys for good (Alipay; Stripe's re-sends "
        "are bounded by its idempotency window); past that it is not re-sent but left pending"
        " for an operator (alert PaygateResendLimitReached, `paygate reconcile settle`). One "
        "re-send per reconciler pass at most: the default is about 17 minutes of a provider "
        "that answers every re-send with no known outcome (an Alipay precreate refused with a"
        " sub code paygate cannot read).",
    )
    stray_settle_s: float = Field(
        300.0,
        gt=0,
        description="Seconds after an attempt was closed as not charged before the "
        "stray-charge sweep asks its provider to confirm it holds no charge (a call of it "
        "still in flight has arrived by then). A 'no charge' marks the key verified only "
        "this long plus the provider's declared search lag (status_search_lag; Stripe: 2 h) "
        "after it closed; until then the key is asked again.",
    )
    claim_lease_s: float = Field(
        30.0,
        gt=0,
        description="Seconds a worker's claim on a payment, a refund or a stray charge's "
        "reversal lasts before another worker (or the reconciler) may take the work over; "
        "renewed before every provider "
        "call. Keep it above the provider timeout. Safety never depends on it, only how soon "
        "a dead worker's payments move on.",
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
        "events, and renews it at least every `PAYGATE_OUTBOX_LEASE_RENEW_S`. After a crash "
        "of the holder another consumer's relay takes over within this (plus the renewal "
        "interval); keep it well above the time a batch of 500 events takes to publish.",
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
        None,
        description="PEM certificate (chain) of the facade. Unset: a self-signed one "
        "(development only; production refuses to start without it).",
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
        description="Requests per second each client may make, across all facade instances "
        "and workers (token bucket refill rate; the bucket is in the database).",
    )
    rate_limit_burst: int = Field(
        50, ge=1, description="Requests a client may make at once before the rate applies."
    )

    acquirer_host: str = Field("127.0.0.1", description="Address the sandbox acquirer binds.")
    acquirer_port: int = Field(8081, ge=0, le=65535, description="Port of the sandbox acquirer.")
    acquirer_ledger: Path = Field(
        Path("sandbox-ledger.db"), description="SQLite file of the sandbox acquirer's ledger."
    )

    metrics_host: str = Field(
        "127.0.0.1",
        description="Address of the consumer's ops listener (plain HTTP `/metrics`, `/healthz`, "
        "`/readyz`): for scrapers and probes on a private network.",
    )
    metrics_port: int = Field(
        9102, ge=0, le=65535, description="Port of the consumer's ops listener."
    )
    facade_ops_host: str = Field(
        "127.0.0.1",
        description="Address of the facade's ops listener (plain HTTP `/metrics`, `/healthz`, "
        "`/readyz`): for scrapers and probes on a private network. The public HTTPS port "
        "serves no `/metrics`.",
    )
    facade_ops_port: int = Field(
        9103, ge=0, le=65535, description="Port of the facade's ops listener."
    )
    ops_sample_interval_s: float = Field(
        5.0,
        gt=0,
        description="Seconds between the consumer's samples of its lag (asked of the broker) "
        "and of the store's backlogs (outbox, in-doubt attempts) for `/metrics`.",
    )
    assignment_grace_s: float = Field(
        30.0,
        gt=0,
        description="Seconds a consumer may hold no partition (starting, rebalancing) before "
        "its `/readyz` fails `consumer_assignment`. Run no more consumers than the command "
        "topic has partitions: the extra ones hold none.",
    )
    outbox_stall_s: float = Field(
        60.0,
        gt=0,
        description="Seconds without a finished pass of the consumer's outbox relay (a lease "
        "attempt, and as holder a published batch) before its `/readyz` fails "
        "`outbox_relay`; above `PAYGATE_OUTBOX_LEASE_S`.",
    )
    webhooks_dispatch: bool = Field(
        True,
        description="Whether the consumer process delivers webhooks (docs/webhooks.md). Off: "
        "run `paygate webhooks run` instead; several dispatchers may run, each delivery "
        "attempt is claimed by one.",
    )
    webhooks_timeout_s: float = Field(
        10.0,
        gt=0,
        le=60,
        description="Seconds a webhook delivery attempt may take (connect and answer); a "
        "slower endpoint's attempt fails and is tried again later.",
    )
    webhooks_max_in_flight: int = Field(
        32, ge=1, description="Webhook delivery attempts one dispatcher makes at once."
    )
    webhooks_per_endpoint: int = Field(
        4,
        ge=1,
        description="Of those, at most this many to one endpoint, so a slow endpoint never "
        "holds up the deliveries to others.",
    )
    webhooks_retention_days: float = Field(
        30.0,
        gt=0,
        description="Delivered and failed webhook deliveries older than this are deleted "
        "(pending ones never are).",
    )
    webhooks_retry_window_h: float = Field(
        24.0,
        ge=24,
        description="Hours a webhook delivery is retried for (exponential back-off with "
        "jitter) before it is marked failed.",
    )
    event_loop: EventLoop = Field(
        EventLoop.ASYNCIO,
        description="Event loop of every process: `asyncio` (the standard library's) or "
        "`uvloop` (needs `pip install 'paygate[uvloop]'`; docs/performance.md has what it "
        "changes).",
    )
    log_level: str = Field("INFO", description="Log level of the JSON logs on stderr.")
    log_account_fields: list[str] = Field(
        default=sorted(DEFAULT_ACCOUNT_FIELDS),
        description="JSON: log fields whose string values are account numbers, masked to "
        "their last four characters whatever they look like. Beside them, the logs mask "
        "every Luhn-valid card number and valid IBAN in any text, and leave other numbers "
        "(order ids, offsets) searchable.",
    )
    otlp_endpoint: str | None = Field(
        None,
        description="Where to export traces over OTLP/HTTP (protobuf), e.g. "
        "`http://otel-collector:4318/v1/traces`. Unset, tracing is off (nothing is "
        "instrumented) unless the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or "
        "`OTEL_EXPORTER_OTLP_ENDPOINT` is set; `OTEL_SDK_DISABLED=true` turns it off whatever "
        "is set. See docs/operations.md#traces.",
    )
    trace_sample_ratio: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of traces kept that start here (a REST request, a command without "
        "a `traceparent`); a command that arrives with one follows its sampling decision.",
    )
    max_provider_calls: int = Field(
        100,
        ge=1,
        description="Provider calls at once per consumer process, all providers and "
        "handlers together (the rate against a provider taking t seconds is at most this "
        "/ t); docs/operations.md says how to size it.",
    )
    alipay_app_id: str | None = Field(
        default=None,
        description="Alipay app id; required when `alipay` is a provider (route "
        '`{"alipay": ["alipay"]}`).',
    )
    alipay_app_private_key: SecretStr | None = Field(
        default=None,
        description="The Alipay app's RSA2 private key (PKCS#1 PEM or its base64 body); best "
        "given as a file in PAYGATE_SECRETS_DIR.",
    )
    alipay_public_key: str | None = Field(
        default=None,
        description="Alipay's public key (X.509 PEM or its body): verifies answers and "
        "notifications.",
    )
    alipay_gateway_url: str = Field(
        "https://openapi.alipay.com/gateway.do",
        description="Alipay's gateway; the sandbox service's `/gateway.do` in tests.",
    )
    alipay_notify_url: str | None = Field(
        default=None,
        description="The public URL of the facade's `/v1/notifications/alipay`, sent with "
        "each trade for Alipay's asynchronous notifications.",
    )
    alipay_mode: str = Field(
        "qr",
        description="`qr`: face-to-face QR codes (alipay.trade.precreate); `page`: web "
        "redirects (alipay.trade.page.pay).",
    )
    alipay_action_ttl_s: float = Field(
        900.0,
        ge=60,
        description="Seconds the payer has to act before the trade expires and is closed.",
    )
    vault_kek: SecretStr = Field(
        SecretStr(DEV_VAULT_KEK),
        description="The vault's key-encryption keys, `<id>:<64 hex digits>` (32 random "
        'bytes: `echo "kek-$(date +%Y%m):$(openssl rand -hex 32)"`), comma-separated: the '
        "first wraps new data keys, the others only unwrap (rotation, docs/security.md). "
        "Prefer `PAYGATE_VAULT_KEK_FILE` or a KMS. The default is for development only and "
        "refused in production.",
    )
    vault_kek_file: Path | None = Field(
        None,
        description="File holding the key-encryption keys in the format of "
        "`PAYGATE_VAULT_KEK` (one per line; mode 0400, owned by paygate's user); wins over "
        "it when set.",
    )
    vault_database_url: str | None = Field(
        None,
        description="SQLAlchemy async URL of the vault's database (tables `vault_keys`, "
        "`vault_entries`). Unset: paygate's own database (`PAYGATE_DATABASE_URL`).",
    )
    accept_clear_account_numbers: bool | None = Field(
        None,
        description="Whether a clear account number in a Kafka command is accepted (then "
        "vaulted at first read, never re-published) instead of dead-lettered "
        "`invalid_request`. Unset: only with `PAYGATE_ENV=development`. Producers should "
        "send a token or an encrypted number (docs/security.md).",
    )
    account_encryption_key_files: list[Path] = Field(
        default=[DEV_ACCOUNT_ENCRYPTION_KEY_FILE],
        description="JSON: PEM files of RSA private keys (3072 bits) that open account numbers "
        "producers encrypted to paygate's public key; the first one's public key is published "
        "at `GET /v1/payment_methods/encryption_key`, the others still decrypt (rotation). "
        "In development a missing file is generated; production refuses the default path.",
    )
    vault_token_retention_days: float = Field(
        30.0,
        gt=0,
        description="Days a token not saved for reuse lives after it was made (not after "
        "its payment became final: keep this above `PAYGATE_ABANDON_AFTER_S`); then `paygate "
        "keys expire` (and the consumer's housekeeping) crypto-shreds it. Saved tokens "
        "(`POST /v1/payment_methods`) live until deleted.",
    )
    authorization_check_interval_s: float = Field(
        900.0,
        gt=0,
        description="Seconds between the passes that ask providers whether authorized "
        "payments' holds ended on their own (then `expired`, or `canceled` if voided at the "
        "provider); each pass asks about at most 200, least recently asked first.",
    )
    reconcile_waiting_max_s: float = Field(
        120.0,
        gt=0,
        description="Longest pause, in seconds, between the reconciler's questions about "
        "one payment waiting for its payer (`requires_action`). The pause is the time it "
        "has waited so far, from `PAYGATE_RECONCILE_MIN_AGE_S` up to this, and never "
        "runs past its action's expiry. A provider's notification is recorded at once; "
        "without one (the sandbox's and Stripe's payer actions) a payer's action is seen "
        "up to this long after it. At least `PAYGATE_RECONCILE_MIN_AGE_S`.",
    )
    alipay_dev_keys_dir: Path | None = Field(
        None,
        description="Development only (production refuses it): a directory of generated "
        "Alipay test keys (`alipay-private.pem`, `app-private.pem`) shared by the sandbox's "
        "Alipay simulator, which generates them, and paygate, which then takes its "
        "`PAYGATE_ALIPAY_*` app id and keys from there. Set by `paygate dev`, "
        "docker-compose.yml and the Helm chart's dev values (docs/alipay.md).",
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Signing secret (whsec_...) of the Stripe webhook endpoint that posts to "
        "the facade's `/v1/notifications/stripe` (docs/operations.md#stripe-webhooks): "
        "Stripe's events hand a charge its search shows late to the stray-charge sweep. "
        "Required by the facade in production when `stripe` is a provider; unset in "
        "development, the endpoint is not served.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Read at every instantiation, so the directory can be set like any other setting.
        secrets_dir = os.environ.get(SECRETS_DIR_ENV) or None
        files = SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir)
        return init_settings, env_settings, dotenv_settings, files

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _kafka_choice_in_any_case(cls, value: object) -> object:
        # Kafka's documentation spells them in capitals; `sasl_ssl` means the same.
        return value.upper() if isinstance(value, str) else value

    @field_validator("env", "sqlite_synchronous", mode="before")
    @classmethod
    def _choice_in_any_case(cls, value: object) -> object:
        # `FULL` and `NORMAL` are how SQLite's documentation spells them; `Production` is
        # no less clear than `production`.
        return value.lower() if isinstance(value, str) else value

    @field_validator("stripe_webhook_secret")
    @classmethod
    def _stripe_signing_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # An API key or a Dashboard id pasted here would verify no event at all, silently;
        # a bare or short one (whsec_ from an unset template variable) would verify anyone's.
        problem = None if value is None else stripe_signing_secret_problem(value.get_secret_value())
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _reconcile_windows(self) -> Settings:
        if self.reconcile_min_age_s <= self.provider_timeout_s:
            raise ValueError("PAYGATE_RECONCILE_MIN_AGE_S must exceed PAYGATE_PROVIDER_TIMEOUT_S")
        if self.abandon_after_s <= 2 * self.reconcile_min_age_s:
            raise ValueError(
                "PAYGATE_ABANDON_AFTER_S must exceed twice PAYGATE_RECONCILE_MIN_AGE_S"
            )
        if self.reconcile_waiting_max_s < self.reconcile_min_age_s:
            raise ValueError(
                "PAYGATE_RECONCILE_WAITING_MAX_S must be at least PAYGATE_RECONCILE_MIN_AGE_S"
            )
        if self.claim_lease_s <= self.provider_timeout_s:
            # Not for safety (the claim's token decides who writes), but a lease shorter than
            # a call would hand live owners' payments over mid-call, every call.
            raise ValueError("PAYGATE_CLAIM_LEASE_S must exceed PAYGATE_PROVIDER_TIMEOUT_S")
        return self

    @model_validator(mode="after")
    def _outbox_lease_renewed_in_time(self) -> Settings:
        # A holder needs half the lease left to publish a batch (persistence.outbox_lease):
        # renewals must come well inside it.
        if self.outbox_lease_renew_s * 3 > self.outbox_lease_s:
            raise ValueError(
                "PAYGATE_OUTBOX_LEASE_RENEW_S must be at most a third of PAYGATE_OUTBOX_LEASE_S"
            )
        # A healthy batch takes well under the lease (see outbox_lease_s); a relay that has
        # not finished a pass for longer than that is stuck, not busy.
        if self.outbox_stall_s <= self.outbox_lease_s:
            raise ValueError("PAYGATE_OUTBOX_STALL_S must exceed PAYGATE_OUTBOX_LEASE_S")
        return self

    @model_validator(mode="after")
    def _stripe_windows(self) -> Settings:
        # Stripe's search (used to find an attempt by its key) can lag by up to an hour: its
        # "no record" is final only well after that, so abandon_after must be too. No upper
        # bound: how long a key may be re-sent is the provider's idempotency window
        # (StripeProvider.idempotency_window, domain.resend_window), not this setting; see
        # docs/providers.md.
        if "stripe" in self.provider_names and self.abandon_after_s < 4 * 3600:
            raise ValueError(
                "with stripe as a provider, PAYGATE_ABANDON_AFTER_S must be at least 14400 (4 h)"
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
    def _insync_within_replicas(self) -> Settings:
        if self.topic_min_insync_replicas > self.topic_replication_factor:
            # Every acks=all write would fail with NOT_ENOUGH_REPLICAS.
            raise ValueError(
                "PAYGATE_TOPIC_MIN_INSYNC_REPLICAS must not exceed PAYGATE_TOPIC_REPLICATION_FACTOR"
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
    def clear_account_numbers_accepted(self) -> bool:
        if self.accept_clear_account_numbers is not None:
            return self.accept_clear_account_numbers
        return self.env is Environment.DEVELOPMENT

    @property
    def vault_kek_text(self) -> str:
        """The key-encryption keys as configured: the file's content, else the setting's."""
        if self.vault_kek_file is not None:
            return self.vault_kek_file.read_text()
        return self.vault_kek.get_secret_value()

    @property
    def account_key(self) -> bytes:
        return self.account_fingerprint_key.get_secret_value().encode()

    def retry_policy(self) -> RetryPolicy:
        """The back-off and retry budget for providers that certainly did not charge."""
        return RetryPolicy(
            max_attempts=self.provider_max_attempts,
            base_delay_s=self.retry_base_delay_s,
            max_delay_s=max(self.retry_max_delay_s, self.retry_base_delay_s),
            budget_s=self.provider_retry_budget_s,
            max_retry_after_s=self.provider_max_retry_after_s,
        )


def settings_table() -> str:
    """The settings as a Markdown table, for the README."""
    lines = ["| environment variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        env = alias.choices[0] if isinstance(alias, AliasChoices) else f"PAYGATE_{name.upper()}"
        default = field.default
        if isinstance(default, SecretStr):
            default = "(development key)"
        elif isinstance(default, dict | list):
            default = json.dumps(default, default=str)  # as the variable is written
        shown = "(unset)" if default is None else f"`{default}`"
        lines.append(f"| `{env}` | {shown} | {field.description} |")
    return "\n".join(lines) + "\n"
