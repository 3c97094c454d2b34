"""Table definitions. Account numbers are stored only as masked text and keyed fingerprints."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
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
    text,
)

from domain.errors import MAX_DECLINE_CODE_LENGTH, MAX_PARAM_LENGTH

metadata = MetaData()

payments = Table(
    "payments",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("order_id", String(64), nullable=False, index=True),
    # The API client that created it through the facade (null: an upstream service, on
    # Kafka). Orders and idempotency keys are scoped by it; the facade shows a payment only
    # to its client.
    Column("client_id", String(64)),
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
    Column("status", String(24), nullable=False),
    Column("provider", String(32)),
    Column("provider_reference", String(255)),
    Column("error_code", String(64)),
    Column("error_message", Text),
    Column("error_param", String(MAX_PARAM_LENGTH)),
    Column("decline_code", String(MAX_DECLINE_CODE_LENGTH)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # When a provider that certainly did not charge is to be tried again: kept here so the
    # schedule survives a restart of the consumer.
    Column("next_retry_at", DateTime(timezone=True)),
    # Refund totals in minor units: succeeded, and reserved by refunds not final yet. The
    # store moves them with conditional updates that keep refunded + reserved <= amount.
    Column("refunded_minor", BigInteger, nullable=False, default=0, server_default=text("0")),
    Column(
        "refund_reserved_minor", BigInteger, nullable=False, default=0, server_default=text("0")
    ),
    # Of ``refunded_minor``, what the provider reported refunded outside paygate (by hand,
    # in its dashboard), which has no refund row: refunded_minor = succeeded refund rows +
    # this (domain.provider_refunds; migration 0027).
    Column(
        "refunded_outside_minor", BigInteger, nullable=False, default=0, server_default=text("0")
    ),
    # What a partial capture takes (set with the write-ahead move to capturing, so a re-send
    # asks for the same amount; cleared if the capture certainly did not happen). Null: the
    # whole amount. Refunds are bounded by it (see persistence.refund_store).
    Column("captured_minor", BigInteger),
    # The claim on the payment's provider work (its attempts, or its capture): only the
    # worker holding ``claim_token`` may call the provider for it or record what it did;
    # another may take the claim only after ``claim_expires_at`` (see persistence.claims).
    Column("claim_token", String(36)),
    Column("claim_expires_at", DateTime(timezone=True)),
    # When a claim was last taken on it: reconcilers look at the least recently examined
    # first, so rows they cannot settle yet never keep the others waiting.
    Column("examined_at", DateTime(timezone=True)),
    # What a requires_action payment waits on (domain.next_action): null otherwise.
    Column("next_action_type", String(16)),
    Column("next_action_target", Text),
    Column("next_action_expires_at", DateTime(timezone=True)),
    # When the reconciler may ask about a requires_action payment again (null: at once);
    # ignored in any other status (consumer.payment_reconciler).
    Column("next_check_at", DateTime(timezone=True)),
    # The latest reading of the charge's refunded total its provider made with a time
    # (Stripe's ``amount_refunded`` in a ``charge.refunded`` event, and the event's
    # ``created`` in Unix seconds): a failure of a refund made outside paygate recorded
    # after it is netted from it by the provider's times (domain.failed_refund_netting;
    # migration 0032). Null: none read yet.
    Column("provider_refunded_minor", BigInteger),
    Column("provider_refunded_unix", BigInteger),
    Index("ix_payments_live_keys", "key_expired", "created_at"),
    Index("ix_payments_client_order", "client_id", "order_id", "created_at"),
    # A provider's notice of a refund made outside paygate names the charge, not the payment
    # (Stripe's Refund names its PaymentIntent): the payment is found by it (migration 0030).
    Index("ix_payments_provider_reference", "provider_reference"),
)

# One row per refund, written (with its amount reserved on the payment) before the provider
# is called. The id derives from (payment, idempotency key), so a re-sent command finds it.
refunds = Table(
    "refunds",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("payment_id", ForeignKey("payments.id"), nullable=False, index=True),
    Column("order_id", String(64), nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    Column("parameters_hash", String(64), nullable=False),
    # Null only for a refused "refund what remains" when nothing remained.
    Column("amount_minor", BigInteger),
    Column("currency", String(3)),
    Column("reason", String(32)),
    Column("status", String(16), nullable=False),
    Column("provider", String(32)),
    Column("provider_reference", String(255)),
    Column("error_code", String(64)),
    Column("error_message", Text),
    Column("decline_code", String(MAX_DECLINE_CODE_LENGTH)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The claim on the refund's provider work, as on payments.
    Column("claim_token", String(36)),
    Column("claim_expires_at", DateTime(timezone=True)),
    Column("examined_at", DateTime(timezone=True)),
    Index("ix_refunds_open", "status", "updated_at"),
    # A provider's failure of a refund made outside paygate is told from paygate's own by
    # the provider's refund id (persistence.outside_refund_failed; migration 0030).
    Index("ix_refunds_provider_reference", "provider_reference"),
)

# Refunds made outside paygate (by hand, in the provider's dashboard) that the provider
# reported failed, one row per provider refund: its money went back to the merchant, so the
# part of it counted in ``payments.refunded_outside_minor`` was taken back once
# (``taken_back_minor``, at most the refund's amount), and a reading of the charge's
# refunded total made while it stood is taken net of ``amount_minor``
# (persistence.outside_refund_failed, persistence.provider_refund_store). The key makes a
# replayed notice change nothing.
outside_refund_failures = Table(
    "outside_refund_failures",
    metadata,
    Column("provider", String(32), primary_key=True),
    Column("provider_reference", String(255), primary_key=True),
    Column("payment_id", ForeignKey("payments.id"), nullable=False, index=True),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("taken_back_minor", BigInteger, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    # When the provider made the refund and failed it, in Unix seconds (Stripe's Refund
    # ``created`` and its ``refund.failed`` event's ``created``): a reading of the total is
    # netted of it only when made in between (domain.failed_refund_netting; migration
    # 0032). Null: not known (recorded before 0032): netted from every reading.
    Column("made_unix", BigInteger),
    Column("failed_unix", BigInteger),
    CheckConstraint(
        "amount_minor > 0 AND taken_back_minor >= 0 AND taken_back_minor <= amount_minor",
        name="ck_outside_refund_failures_amounts",
    ),
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
    # The claim token of the worker that opened the attempt. Only while that worker still
    # holds the payment may the attempt be closed as "certainly not charged" and another
    # provider tried: after a takeover, the first owner may still have the call in flight.
    Column("opened_by", String(36)),
    # What the provider charged under this key, when it did.
    Column("provider_reference", String(255)),
    # The payer and payee accounts sealed (AES-GCM) for as long as the attempt is open, so
    # whoever owns it next can re-send it with the same key; cleared when it finishes.
    Column("sealed_request", LargeBinary),
    # When the provider confirmed that an attempt closed as "certainly not charged" holds
    # no charge (see consumer.stray_charges): every key ever sent is checked once. Set too,
    # without asking, on the attempt a captured payment stands on: no charge under the key
    # but the payment's own (persistence.stray_store.mark_own_charges).
    Column("verified_at", DateTime(timezone=True)),
    # The key's check generation: how often a provider's notice reopened it for the sweep
    # (persistence.stray_store.reopen). The sweep's marks of what it read update only while
    # this is unchanged, so a reopen between its question and its mark is never lost.
    Column("reopen_count", Integer, nullable=False, default=0, server_default=text("0")),
    # When the stray-charge sweep may ask about the key again (null: never asked, or
    # reopened since): stamped before each question, so a key no provider answers moves
    # behind the others instead of hiding them (persistence.stray_store). Ordering only.
    Column("next_sweep_at", DateTime(timezone=True)),
    # When the key was last sent again (a re-send or a retry), stamped under the claim just
    # before the call goes out (persistence.payment_claims.stamp_sending); null: sent only
    # once, when the attempt was made (``created_at``). The provider's silence about the key
    # is final only counted from its last send (consumer.payment_handler._abandon_when_old).
    Column("last_sent_at", DateTime(timezone=True)),
    # How often the key was sent again (re-sends and retries that may have gone out), raised
    # with ``last_sent_at`` before each goes out, taken back for one that certainly did not
    # (persistence.payment_claims.uncount_unsent); past PAYGATE_RESEND_LIMIT an in-doubt key
    # is withheld for an operator instead (consumer.payment_handler, docs/alipay.md "Bounded
    # re-sends").
    Column("resend_count", Integer, nullable=False, default=0, server_default=text("0")),
)
# What the stray-charge sweep reads each pass: only the attempts not verified yet.
Index(
    "ix_provider_attempts_unverified",
    provider_attempts.c.created_at,
    postgresql_where=provider_attempts.c.verified_at.is_(None),
    sqlite_where=provider_attempts.c.verified_at.is_(None),
)

# Charges the provider made under a key that is not the payment's charge: found by the
# stray-charge sweep, reversed through the provider under a key of their own.
stray_charges = Table(
    "stray_charges",
    metadata,
    Column("attempt_key", String(64), primary_key=True),
    Column("payment_id", ForeignKey("payments.id"), nullable=False, index=True),
    Column("provider", String(32), nullable=False),
    Column("provider_reference", String(255)),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    # reversing (the reversal is being sent or is in doubt), reversed, or failed.
    Column("status", String(16), nullable=False),
    Column("reversal_reference", String(255)),
    Column("error_message", Text),
    # The key of the reversal refund last sent (written before it is sent): while set, the
    # sweep asks the provider about that refund before anything else, since a charge's
    # refunded amount counts a refund still pending that may yet fail (migration 0028).
    Column("reversal_key", String(255)),
    Column("found_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # When the sweep may try the reversal again (null: never tried): stamped before each
    # try, so a reversal without an answer moves behind the others (persistence.stray_store).
    Column("next_sweep_at", DateTime(timezone=True)),
    # The claim on the reversal's provider work, as on payments: only the sweeper holding
    # ``claim_token`` asks or tells the provider anything about the reversal, or records
    # what it learned (persistence.claims, migration 0029).
    Column("claim_token", String(36)),
    Column("claim_expires_at", DateTime(timezone=True)),
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
    # The W3C traceparent of the span that wrote the row (null when tracing is off): the
    # relay's send continues that trace (telemetry.trace_context).
    Column("trace_parent", String(55)),
    Index("ix_outbox_unpublished", "published_at", "id"),
)
