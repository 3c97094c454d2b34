"""Prometheus metrics, in one container so tests can pass a fresh registry.

Names follow Prometheus conventions: ``<prefix>_<what>_<unit>``, counters end in ``_total``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A command's way from producer to durable outcome includes provider retries (up to the
# retry budget, 90 s by default), so its buckets reach further.
_COMMAND_BUCKETS = (*_LATENCY_BUCKETS, 60.0, 120.0, 300.0)
# A writer-queue transaction's lock: a tenth of a millisecond when no one else holds it, up
# to seconds behind another process's long transaction (SQLite gives up at 30 s).
_WRITE_LOCK_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
)  # fmt: skip


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, prefix: str = "paygate") -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.commands_consumed = Counter(
            f"{prefix}_commands_consumed_total",
            "Commands taken from the command topic, by kind (payment, refund, capture, cancel; "
            "unknown for a dead letter, which may not decode) and outcome (succeeded, failed, "
            "pending, authorized, canceled, expired, replayed, conflict, refused, "
            "owned_elsewhere, dead_lettered, refunded: paid and refunded in full outside "
            "paygate).",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.provider_call_seconds = Histogram(
            f"{prefix}_provider_call_seconds",
            "Latency of calls to payment providers, by provider and outcome.",
            ["provider", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.provider_failovers = Counter(
            f"{prefix}_provider_failovers_total",
            "Payments moved to the next provider of their route after a call that certainly "
            "did not charge, by the provider failed over from and to.",
            ["from", "to"],
            registry=self.registry,
        )
        self.http_request_seconds = Histogram(
            f"{prefix}_http_request_seconds",
            "Latency of HTTP requests to the facade, by method, route and status.",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            f"{prefix}_dead_lettered_total",
            "Messages sent to the dead-letter topic, by error code and reason (the "
            "`paygate.error.reason` header without its detail: invalid_value, "
            "database_refused, rule_violation, retries_exhausted, bad_magic_byte, ...).",
            ["code", "reason"],
            registry=self.registry,
        )
        self.outbox_published = Counter(
            f"{prefix}_outbox_published_total",
            "Result events published from the outbox.",
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            f"{prefix}_outbox_backlog",
            "Outbox rows not yet published, read from the store by every consumer (sampled "
            "every `PAYGATE_OPS_SAMPLE_INTERVAL_S`): take the max over them.",
            registry=self.registry,
        )

        self.reconciled = Counter(
            f"{prefix}_reconciled_total",
            "In-doubt payments examined by the reconciler, by result "
            "(resolved, already_final, owned_elsewhere, still_pending, failed).",
            ["result"],
            registry=self.registry,
        )
        self.stray_charges = Counter(
            f"{prefix}_stray_charges_total",
            "Charges found under attempt keys the payment does not stand on, by provider and "
            "result (found, reversed, reversal_failed). Any `found` is a bug or a provider "
            "fault: it alerts.",
            ["provider", "result"],
            registry=self.registry,
        )

        self.in_flight = Gauge(
            f"{prefix}_commands_in_flight",
            "Commands taken from Kafka and not yet finished.",
            registry=self.registry,
        )
        self.partitions_revoked = Counter(
            f"{prefix}_partitions_revoked_total",
            "Partitions taken away from this consumer by rebalances.",
            registry=self.registry,
        )
        self.abandoned = Counter(
            f"{prefix}_commands_abandoned_total",
            "In-flight commands given up at revocation or shutdown (redelivered later).",
            registry=self.registry,
        )

        self.refunds_failed_after_success = Counter(
            f"{prefix}_refunds_failed_after_success_total",
            "Refunds paygate recorded succeeded that their provider failed later (Stripe's "
            "refund.failed: the card or account could not take the money, which went back "
            "to the merchant's balance), recorded failed with their amount taken off the "
            "payment's refunded total, by provider. Each is a payer not paid back: it alerts.",
            ["provider"],
            registry=self.registry,
        )
        self.refunds_reconciled = Counter(
            f"{prefix}_refunds_reconciled_total",
            "Refunds without a final answer examined by the reconciler, by result "
            "(resolved, already_final, owned_elsewhere, still_pending, failed).",
            ["result"],
            registry=self.registry,
        )

        self.provider_retries = Counter(
            f"{prefix}_provider_retries_total",
            "Provider calls retried after the provider certainly did not charge, by provider.",
            ["provider"],
            registry=self.registry,
        )

        self.result_listener_errors = Counter(
            f"{prefix}_result_listener_errors_total",
            "Events of the results topic the facade's result listener skipped, by reason "
            "(undecodable, invalid, unexpected).",
            ["reason"],
            registry=self.registry,
        )
        self.result_listener_restarts = Counter(
            f"{prefix}_result_listener_restarts_total",
            "Restarts of the facade's result listener after it stopped on an error.",
            registry=self.registry,
        )

        self.provider_circuit_state = Gauge(
            f"{prefix}_provider_circuit_state",
            "Circuit breaker of each provider: 0 closed (calls go through), 1 half-open (one "
            "probe call goes through), 2 open (charges, captures and refunds fail fast).",
            ["provider"],
            registry=self.registry,
        )
        self.provider_circuit_transitions = Counter(
            f"{prefix}_provider_circuit_transitions_total",
            "Changes of a provider's circuit breaker state, by provider and the states "
            "changed from and to (closed, half_open, open).",
            ["provider", "from", "to"],
            registry=self.registry,
        )

        self.command_seconds = Histogram(
            f"{prefix}_command_seconds",
            "Seconds from a command's Kafka timestamp (set when it was produced) to its "
            "outcome being durable in the consumer: stored with its result event in the outbox, "
            "or written to the dead-letter topic. Includes time waiting in the topic and "
            "provider retries; clocks of producer and consumer hosts must agree.",
            buckets=_COMMAND_BUCKETS,
            registry=self.registry,
        )
        self.oldest_in_flight_age = Gauge(
            f"{prefix}_commands_in_flight_oldest_age_seconds",
            "Seconds the oldest command this consumer is working on has been in its hands "
            "(0 when none is).",
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            f"{prefix}_consumer_lag",
            "Commands of a partition assigned to this consumer that are not committed yet: the "
            "partition's last stable offset minus the group's committed offset (sampled every "
            "`PAYGATE_OPS_SAMPLE_INTERVAL_S`), by topic and partition. Includes the commands "
            "in flight.",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.assigned_partitions = Gauge(
            f"{prefix}_consumer_assigned_partitions",
            "Partitions of the command topic assigned to this consumer; summed over the "
            "consumers, 0 means no one processes commands.",
            registry=self.registry,
        )
        self.outbox_oldest_age = Gauge(
            f"{prefix}_outbox_oldest_age_seconds",
            "Seconds since the oldest unpublished outbox row was written (0 when none is), "
            "read from the store by every consumer: take the max over them.",
            registry=self.registry,
        )
        self.in_doubt_attempts = Gauge(
            f"{prefix}_in_doubt_attempts",
            "Provider attempts opened and not finished, on payments still pending or "
            "processing: calls in flight now, or in doubt until the reconciler asks the "
            "provider. Read from the store by every consumer: take the max over them.",
            registry=self.registry,
        )
        self.in_doubt_oldest_age = Gauge(
            f"{prefix}_in_doubt_oldest_age_seconds",
            "Seconds since the oldest of those attempts was opened (0 when there is none).",
            registry=self.registry,
        )
        self.reconcile_window = Gauge(
            f"{prefix}_reconcile_window_seconds",
            "How old an in-doubt attempt may get before the reconciler has had its chance at "
            "it: `PAYGATE_RECONCILE_MIN_AGE_S` plus two `PAYGATE_RECONCILE_INTERVAL_S`. An "
            "older one is stuck (alert PaygateInDoubtAttemptsStuck).",
            registry=self.registry,
        )
        self.webhook_attempts = Counter(
            f"{prefix}_webhook_attempts_total",
            "Webhook delivery attempts, by result: delivered (answered 2xx), failed (to be "
            "tried again), refused_address (the endpoint's host resolved to an address "
            "paygate may not send to; tried again), gave_up (the retry window is over: the "
            "delivery is failed; re-send it with `paygate webhooks retry`), secret_unavailable "
            "(the endpoint's signing secret does not open: its vault data key is retired or "
            "unknown; tried again, alert PaygateWebhookSecretUnavailable).",
            ["result"],
            registry=self.registry,
        )
        self.webhook_attempt_seconds = Histogram(
            f"{prefix}_webhook_attempt_seconds",
            "Time of a webhook delivery attempt, from connecting to the endpoint's answer "
            "(or the timeout).",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.webhook_deliveries_pending = Gauge(
            f"{prefix}_webhook_deliveries_pending",
            "Webhook deliveries owed, by state: pending (never tried yet: the dispatchers' "
            "queue) and retrying (tried, failed, waiting for their next attempt within the "
            "retry window). Read from the store by every consumer (sampled every "
            "`PAYGATE_OPS_SAMPLE_INTERVAL_S`): take the max over them.",
            ["state"],
            registry=self.registry,
        )
        self.webhook_deliveries_oldest_age = Gauge(
            f"{prefix}_webhook_deliveries_oldest_age_seconds",
            "Seconds since the oldest delivery of each state was queued (0 when there is "
            "none). A pending one older than minutes means no dispatcher takes the queue "
            "(alert PaygateWebhookBacklogStuck); retrying ones may age up to the retry "
            "window. Take the max over the consumers.",
            ["state"],
            registry=self.registry,
        )
        self.webhook_deliveries_failed = Gauge(
            f"{prefix}_webhook_deliveries_failed",
            "Webhook deliveries that gave up (their retry window is over), kept until "
            "`PAYGATE_WEBHOOKS_RETENTION_DAYS` prunes them: events clients missed unless "
            "re-sent. Take the max over the consumers.",
            registry=self.registry,
        )
        self.resends_withheld = Counter(
            f"{prefix}_resends_withheld_total",
            "In-doubt calls not sent again because their key is older than the provider "
            "honours it for (its idempotency window, less a margin), by provider and operation "
            "(payment, refund): a re-send could charge or refund twice, so the call stays "
            "pending for an operator. Counted at every pass that finds one; any alerts.",
            ["provider", "operation"],
            registry=self.registry,
        )
        self.resend_limit_reached = Counter(
            f"{prefix}_resend_limit_reached_total",
            "In-doubt calls not sent again because their key was already re-sent "
            "PAYGATE_RESEND_LIMIT times while the provider held nothing under it (every re-send "
            "answered with no known outcome), by provider and operation: the call stays pending "
            "for an operator. Counted at every pass that finds one; any alerts.",
            ["provider", "operation"],
            registry=self.registry,
        )
        self.provider_answers_unverified = Counter(
            f"{prefix}_provider_answers_unverified_total",
            "Provider answers whose signature did not verify, by provider: each is read as "
            "an unknown outcome and asked again, so a wrong provider public key makes every "
            "call fail this way, silently but for this count; a steady rate alerts.",
            ["provider"],
            registry=self.registry,
        )
        self.stray_unanswered = Counter(
            f"{prefix}_stray_unanswered_total",
            "Questions of the stray-charge sweep that got no answer about an attempt key, by "
            "provider and reason (provider_error: an error, a timeout or an answer the adapter "
            "cannot read; no_provider: the provider is no longer configured; awaiting_payer: "
            'a trade still waiting for its payer on a final payment; search_lag: "no charge" '
            "from a provider whose search may not show the charge yet, final only once its "
            "status_search_lag has passed). The key is asked again later; questions "
            "unanswered for hours alert (search_lag and awaiting_payer do not).",
            ["provider", "reason"],
            registry=self.registry,
        )
        self.notifications_refused = Counter(
            f"{prefix}_provider_notifications_refused_total",
            "Provider notifications (Stripe's events, Alipay's notifications) the facade "
            "refused, by provider and reason (signature: unsigned, forged, another secret's "
            "or stale; account: another account's, mode's or app's; unreadable: signed but "
            "not readable; mismatch: not the attempt's amount, trade or provider; "
            "unknown_payment: no payment has the trade; media_type: not the provider's "
            "content type). Nothing changed; the provider sends a refused one again (Stripe "
            "for three days), so refusals that last alert.",
            ["provider", "reason"],
            registry=self.registry,
        )
        self.follow_ups_reconciled = Counter(
            f"{prefix}_follow_ups_reconciled_total",
            "Captures and cancels left in flight examined by the reconciler, by operation "
            "(capture, cancel) and result (resolved, already_final, owned_elsewhere, "
            "still_pending, failed: settling it raised something not an outage, logged with "
            "its traceback; it is asked again next pass).",
            ["operation", "result"],
            registry=self.registry,
        )
        self.stray_reversals_unanswered = Counter(
            f"{prefix}_stray_reversals_unanswered_total",
            "Reversals of stray charges tried without an answer, by provider and reason "
            "(provider_error: an error or a timeout, the outcome unknown; pending: the "
            "provider's refund is not final yet; concurrent: another sweeper took this one's "
            "claim over, noted a reversal key or recorded the reversal since this one read the "
            "stray charge, so it sent and recorded nothing more; claimed: another sweeper holds "
            "the stray charge's claim, so this one left it alone and sent nothing). The "
            "reversal is tried again under the same key, held back from "
            "1 minute up to 1 hour; provider errors for hours alert.",
            ["provider", "reason"],
            registry=self.registry,
        )
        self.tls_reload_refusals = Counter(
            f"{prefix}_tls_reload_refusals_total",
            "Checks of the facade's certificate files (every PAYGATE_TLS_RELOAD_INTERVAL_S "
            "and on SIGHUP) that kept the certificate it serves because the files are "
            "refused, by reason (development_certificate: the self-signed development "
            "certificate outside development; unreadable: a file missing or not readable; "
            "invalid_pair: not a certificate and its matching key). Counted at every check "
            "while the files stay so (logged once); the facade only.",
            ["reason"],
            registry=self.registry,
        )
        self.db_write_lock_wait_seconds = Histogram(
            f"{prefix}_db_write_lock_wait_seconds",
            "Seconds each writer-queue transaction waited for its locks, by database dialect "
            "(sqlite, postgresql): on SQLite from `BEGIN IMMEDIATE` to holding the "
            "database's one write lock, which another process's transaction (or another "
            "connection) may hold; on PostgreSQL the time the batch's lock order "
            "(advisory locks, payment and refund rows) took. One observation per "
            "transaction, however many operations it commits.",
            ["dialect"],
            buckets=_WRITE_LOCK_BUCKETS,
            registry=self.registry,
        )
        self.db_write_lock_held_seconds = Histogram(
            f"{prefix}_db_write_lock_held_seconds",
            "Seconds each writer-queue transaction held its locks, from having them to the "
            "end of its commit (or rollback), by database dialect. On SQLite every other "
            "writer of the database, in this process or another, waits meanwhile: the sum's "
            "rate is the share of time this process holds the write lock.",
            ["dialect"],
            buckets=_WRITE_LOCK_BUCKETS,
            registry=self.registry,
        )

    def exposition(self) -> tuple[bytes, str]:
        """The text format body and its content type, for a /metrics endpoint."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def metrics_page() -> str:
    """docs/metrics.md, generated from the container so the list cannot drift."""
    lines = [
        "# Metrics",
        "",
        "Served as Prometheus text at `/metrics` on each process's ops listener (plain HTTP,",
        "for scrapers on a private network): the consumer's on",
        "`PAYGATE_METRICS_HOST`:`PAYGATE_METRICS_PORT`, the facade's on",
        "`PAYGATE_FACADE_OPS_HOST`:`PAYGATE_FACADE_OPS_PORT` (never on its public HTTPS port).",
        "Series the store is read for (outbox, in-doubt attempts, webhook deliveries) are",
        "reported by every consumer: aggregate them with `max`. Generated from",
        "`telemetry/metrics.py` by `python -m telemetry.metrics`.",
        "",
        "| metric | type | meaning |",
        "| --- | --- | --- |",
    ]
    for family in Metrics().registry.collect():
        suffix = "_total" if family.type == "counter" else ""
        lines.append(f"| `{family.name}{suffix}` | {family.type} | {family.documentation} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(metrics_page(), end="")
