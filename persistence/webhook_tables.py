"""The webhook tables, on the shared ``metadata`` so ``create_schema`` makes them too.

``webhook_endpoints`` holds each API client's endpoints; ``webhook_deliveries`` one row per
(endpoint, event), written in the transaction of the result event's outbox row
(:mod:`persistence.webhook_fanout`), so an event is never lost and never queued for a
result that did not commit. A delivery's id derives from (endpoint, event), so an event
written twice (a re-published result) is queued once.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
)

from persistence.tables import metadata

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("description", String(255)),
    # The event types it receives (``*``: all), as a JSON list.
    Column("enabled_events", JSON, nullable=False),
    # The signing secret, ``whsec_`` + base64, as Standard Webhooks writes it. An HMAC key
    # cannot be stored as a hash (the dispatcher signs with it), so it is stored encrypted
    # under a vault data key (persistence.webhook_secrets): the key's id and the ciphertext.
    Column("secret_key_id", String(32)),
    Column("secret_ciphertext", LargeBinary),
    # The secret in clear: only on rows from before revision 0017, until sealed at start.
    Column("secret", String(128)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Set on DELETE: the endpoint receives nothing more; its deliveries stay for audit, and
    # its secret (the three columns above) is erased then (persistence.webhook_secrets).
    Column("deleted_at", DateTime(timezone=True)),
    Index("ix_webhook_endpoints_client", "client_id", "deleted_at"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("endpoint_id", ForeignKey("webhook_endpoints.id"), nullable=False),
    # Standard Webhooks' ``webhook-id``: the same for every attempt and re-send.
    Column("event_id", String(64), nullable=False),
    Column("event_type", String(64), nullable=False),
    # The exact body every attempt signs and sends.
    Column("payload", Text, nullable=False),
    # pending (to be tried at next_attempt_at), delivered, failed (gave up).
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("last_attempt_at", DateTime(timezone=True)),
    Column("last_status_code", Integer),
    Column("last_error", String(512)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # One dispatcher per attempt (persistence.claims): only the token's holder records it.
    Column("claim_token", String(36)),
    Column("claim_expires_at", DateTime(timezone=True)),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_endpoint", "endpoint_id", "created_at"),
)
