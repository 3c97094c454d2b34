"""The tables as ``metadata.create_all`` made them before migrations existed. FROZEN.

This is ``persistence/tables.py`` of git commit 87d65ed, the last release whose processes
created the schema with ``create_all``. Revision 0001 creates exactly these tables, and a
database that has them but no ``alembic_version`` table is recognised by comparing it with
them (see :mod:`persistence.migrate`). Never edit this file: change the schema with a new
revision instead.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

payments = Table(
    "payments",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("order_id", String(64), nullable=False, index=True),
    Column("user_id", String(64), nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    # The key's generation (see domain.idempotency) and whether the key has expired.
    Column("key_generation", Integer, nullable=False, default=0),
    Column("key_expired", Boolean, nullable=False, default=False),
    # Hash of the request's parameters: same key + other parameters is a conflict.
    Column("parameters_hash", String(64), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("payment_method", String(32), nullable=False),
    Column("payer_type", String(16), nullable=False),
    Column("payer_masked", String(16), nullable=False),
    Column("payer_fingerprint", String(64), nullable=False),
    Column("payee_type", String(16), nullable=False),
    Column("payee_masked", String(16), nullable=False),
    Column("payee_fingerprint", String(64), nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("provider", String(32)),
    Column("provider_reference", String(255)),
    Column("error_code", String(64)),
    Column("error_message", Text),
    Column("error_param", String(128)),
    Column("decline_code", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # When a provider that certainly did not charge is to be tried again: kept here so the
    # schedule survives a restart of the consumer.
    Column("next_retry_at", DateTime(timezone=True)),
    Index("ix_payments_live_keys", "key_expired", "created_at"),
)

# Written (and committed) before each provider call, so a crash during the call leaves an
# in-doubt attempt that can be resolved by asking the provider, never an invisible one.
provider_attempts = Table(
    "provider_attempts",
    metadata,
    Column("attempt_key", String(64), primary_key=True),
    Column("payment_id", ForeignKey("payments.id"), nullable=False, index=True),
    Column("attempt_no", Integer, nullable=False),
    Column("provider", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
)

# Result events, written in the same transaction as the state change they report; the
# relay publishes them and stamps published_at.
outbox = Table(
    "outbox",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("event_id", String(36), nullable=False),
    Column("topic", String(249), nullable=False),
    Column("message_key", String(64), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True)),
    Index("ix_outbox_unpublished", "published_at", "id"),
)
