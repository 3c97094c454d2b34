"""The Grafana dashboard ``monitoring/grafana/paygate.json``, generated so it cannot drift.

Regenerate with ``python -m telemetry.dashboard > monitoring/grafana/paygate.json``;
tests/unit/test_monitoring_dashboard.py checks the committed file is this output, that
every panel's query is valid PromQL (``promtool check rules`` on a rule file made of them)
and that it names only metrics :class:`telemetry.metrics.Metrics` exports, and
tests/integration/test_prometheus_scrape.py that the key panels return data from a real
Prometheus scraping a running consumer and facade.

Queries aggregate across instances: per-process series (rates, lag) with ``sum``, series
every consumer reads from the store (outbox, in-doubt attempts, webhook deliveries)
with ``max``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

DATASOURCE: Final = {"type": "prometheus", "uid": "${datasource}"}
RATE: Final = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    width: int = 12
    extra: dict[str, Any] = field(default_factory=dict)


def _quantiles(metric: str, by: str = "") -> tuple[Query, ...]:
    labels = f"le, {by}" if by else "le"
    prefix = "{{" + by + "}} " if by else ""
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket[{RATE}])))",
            f"{prefix}p{int(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    )


ROWS: Final[tuple[tuple[str, tuple[Panel, ...]], ...]] = (
    (
        "Payments",
        (
            Panel(
                "Payment rate by status",
                "Payment commands finished per second, by outcome (succeeded, failed, "
                "pending, replayed, ...).",
                (
                    Query(
                        "sum by (outcome) (rate(paygate_commands_consumed_total"
                        f'{{kind="payment"}}[{RATE}]))',
                        "{{outcome}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Command to result latency",
                "From a command's Kafka timestamp to its durable outcome (stored with its "
                "result event, or dead-lettered).",
                _quantiles("paygate_command_seconds"),
                unit="s",
            ),
            Panel(
                "Refunds and captures",
                "Refund and capture commands finished per second, by kind and outcome.",
                (
                    Query(
                        "sum by (kind, outcome) (rate(paygate_commands_consumed_total"
                        f'{{kind=~"refund|capture"}}[{RATE}]))',
                        "{{kind}} {{outcome}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Dead letters",
                "Commands sent to the dead-letter topic per second, by error code and reason "
                "(`paygate dlq list` shows them).",
                (
                    Query(
                        f"sum by (code, reason) (rate(paygate_dead_lettered_total[{RATE}]))",
                        "{{code}} {{reason}}",
                    ),
                ),
                unit="ops",
            ),
        ),
    ),
    (
        "Providers",
        (
            Panel(
                "Provider latency",
                "Latency of provider calls by provider.",
                _quantiles("paygate_provider_call_seconds", "provider"),
                unit="s",
            ),
            Panel(
                "Provider errors",
                "Provider calls per second that failed (error) or timed out (unknown), by "
                "provider; retries and failovers.",
                (
                    Query(
                        "sum by (provider, outcome) (rate(paygate_provider_call_seconds_count"
                        f'{{outcome=~"error|unknown"}}[{RATE}]))',
                        "{{provider}} {{outcome}}",
                    ),
                    Query(
                        f"sum by (provider) (rate(paygate_provider_retries_total[{RATE}]))",
                        "{{provider}} retries",
                    ),
                    Query(
                        f"sum by (from, to) (rate(paygate_provider_failovers_total[{RATE}]))",
                        "failover {{from}} to {{to}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Provider circuit breakers",
                "0 closed, 1 half-open, 2 open (calls fail fast).",
                (
                    Query(
                        "max by (provider) (paygate_provider_circuit_state)",
                        "{{provider}}",
                    ),
                ),
            ),
            Panel(
                "Circuit breaker changes",
                "Changes of each provider's circuit breaker state in the interval, from and "
                "to (closed, half_open, open): a breaker that flaps between open and "
                "half-open shows here while the state panel, sampled, may miss it.",
                (
                    Query(
                        "sum by (provider, from, to) "
                        f"(increase(paygate_provider_circuit_transitions_total[{RATE}]))",
                        "{{provider}} {{from}} -> {{to}}",
                    ),
                ),
            ),
            Panel(
                "Reconciliations",
                "Payments, refunds, captures and cancels without a final answer examined by "
                "the reconcilers, by result (failed: settling it raised something not an "
                "outage; it is asked again next pass); stray charges found and reversed.",
                (
                    Query(
                        f"sum by (result) (rate(paygate_reconciled_total[{RATE}]))",
                        "payments {{result}}",
                    ),
                    Query(
                        f"sum by (result) (rate(paygate_refunds_reconciled_total[{RATE}]))",
                        "refunds {{result}}",
                    ),
                    Query(
                        "sum by (operation, result) "
                        f"(rate(paygate_follow_ups_reconciled_total[{RATE}]))",
                        "{{operation}} {{result}}",
                    ),
                    Query(
                        "sum by (provider, result) "
                        f"(increase(paygate_stray_charges_total[{RATE}]))",
                        "stray {{provider}} {{result}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Left for an operator or still unanswered",
                "Money questions paygate cannot settle alone, per second: in-doubt re-sends "
                "withheld past the provider's idempotency window (alert "
                "PaygateResendWithheld: `paygate reconcile settle`, docs/runbook.md), "
                "stray-charge questions and reversals without an answer (alerts "
                "PaygateStrayChecksUnanswered, PaygateStrayReversalsUnanswered), by provider "
                "and reason.",
                (
                    Query(
                        "sum by (provider, operation) "
                        f"(rate(paygate_resends_withheld_total[{RATE}]))",
                        "withheld {{provider}} {{operation}}",
                    ),
                    Query(
                        f"sum by (provider, reason) (rate(paygate_stray_unanswered_total[{RATE}]))",
                        "stray question {{provider}} {{reason}}",
                    ),
                    Query(
                        "sum by (provider, reason) "
                        f"(rate(paygate_stray_reversals_unanswered_total[{RATE}]))",
                        "stray reversal {{provider}} {{reason}}",
                    ),
                ),
                unit="ops",
                width=24,
            ),
            Panel(
                "Provider notifications refused",
                "Stripe's events and Alipay's notifications the facade refused, per second, by "
                "provider and reason (signature, account, unreadable, mismatch, "
                "unknown_payment, media_type): the provider sends each again, Stripe for three "
                "days (alert PaygateProviderNotificationsRefused when it lasts 15 minutes).",
                (
                    Query(
                        "sum by (provider, reason) "
                        f"(rate(paygate_provider_notifications_refused_total[{RATE}]))",
                        "{{provider}} {{reason}}",
                    ),
                ),
                unit="ops",
                width=24,
            ),
        ),
    ),
    (
        "Backlogs",
        (
            Panel(
                "Consumer lag",
                "Commands not committed yet, by partition (last stable offset minus committed "
                "offset); and the partitions held by consumers.",
                (
                    Query(
                        "sum by (topic, partition) (paygate_consumer_lag)",
                        "{{topic}}/{{partition}}",
                    ),
                    Query("sum(paygate_consumer_assigned_partitions)", "partitions held"),
                ),
            ),
            Panel(
                "Commands in flight",
                "Commands taken and not finished, and the age of the oldest one.",
                (
                    Query("sum(paygate_commands_in_flight)", "in flight"),
                    Query(
                        "max(paygate_commands_in_flight_oldest_age_seconds)",
                        "oldest (s)",
                    ),
                ),
            ),
            Panel(
                "Rebalances",
                "Partitions taken from the consumers by rebalances, and the in-flight "
                "commands given up at a revocation or a shutdown (redelivered to the next "
                "owner, which finds their claims), per second. A steady rate means "
                "consumers keep leaving the group: look at max.poll.interval.ms and the "
                "pods' restarts.",
                (
                    Query(
                        f"sum(rate(paygate_partitions_revoked_total[{RATE}]))",
                        "partitions revoked",
                    ),
                    Query(
                        f"sum(rate(paygate_commands_abandoned_total[{RATE}]))",
                        "commands abandoned",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Outbox backlog",
                "Result events waiting to be published, the age of the oldest, and the "
                "publish rate.",
                (
                    Query("max(paygate_outbox_backlog)", "unpublished"),
                    Query("max(paygate_outbox_oldest_age_seconds)", "oldest (s)"),
                    Query(
                        f"sum(rate(paygate_outbox_published_total[{RATE}]))",
                        "published/s",
                    ),
                ),
            ),
            Panel(
                "In-doubt attempts",
                "Provider attempts opened and not finished, the age of the oldest, and the "
                "reconcile window it should stay under.",
                (
                    Query("max(paygate_in_doubt_attempts)", "open attempts"),
                    Query("max(paygate_in_doubt_oldest_age_seconds)", "oldest (s)"),
                    Query("max(paygate_reconcile_window_seconds)", "reconcile window (s)"),
                ),
            ),
            Panel(
                "Database write lock",
                "How long the writer queues' transactions waited for their locks (p95 by "
                "dialect; on SQLite the database's one write lock, which every process's "
                "writer shares), and the share of time each process held them (on SQLite, "
                "near 1 for one process means every other writer queues behind it).",
                (
                    Query(
                        "histogram_quantile(0.95, sum by (le, dialect) "
                        f"(rate(paygate_db_write_lock_wait_seconds_bucket[{RATE}])))",
                        "{{dialect}} wait p95 (s)",
                    ),
                    Query(
                        f"sum by (instance) (rate(paygate_db_write_lock_held_seconds_sum[{RATE}]))",
                        "{{instance}} held (share of time)",
                    ),
                ),
            ),
        ),
    ),
    (
        "REST facade",
        (
            Panel(
                "HTTP requests by route",
                "Requests per second by route template and status (probes aside).",
                (
                    Query(
                        "sum by (route, status) (rate(paygate_http_request_seconds_count"
                        f'{{route!~"/healthz|/readyz"}}[{RATE}]))',
                        "{{route}} {{status}}",
                    ),
                ),
                unit="reqps",
            ),
            Panel(
                "HTTP errors",
                "Requests answered 5xx per second by route and status (503: Kafka or the "
                "database unreachable).",
                (
                    Query(
                        "sum by (route, status) (rate(paygate_http_request_seconds_count"
                        f'{{status=~"5..", route!="/readyz"}}[{RATE}]))',
                        "{{route}} {{status}}",
                    ),
                ),
                unit="reqps",
            ),
            Panel(
                "HTTP latency",
                "p99 latency by route (a create with Prefer: wait=N may take up to N s).",
                (
                    Query(
                        "histogram_quantile(0.99, sum by (le, route) "
                        f"(rate(paygate_http_request_seconds_bucket[{RATE}])))",
                        "{{route}} p99",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Result listener",
                "Events of the results topic the facades' result listeners skipped, by "
                "reason, and the listeners' restarts, per second. Skipped or restarting, "
                "a create-and-wait answers 202 after its wait instead of its result: "
                "clients then poll.",
                (
                    Query(
                        f"sum by (reason) (rate(paygate_result_listener_errors_total[{RATE}]))",
                        "skipped {{reason}}",
                    ),
                    Query(
                        f"sum(rate(paygate_result_listener_restarts_total[{RATE}]))",
                        "restarts",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Rate-limited requests",
                "Requests refused 429 per second, by route.",
                (
                    Query(
                        "sum by (route) (rate(paygate_http_request_seconds_count"
                        f'{{status="429"}}[{RATE}]))',
                        "{{route}}",
                    ),
                ),
                unit="reqps",
            ),
        ),
    ),
    (
        "Webhooks",
        (
            Panel(
                "Webhook deliveries by outcome",
                "Delivery attempts per second by result: delivered (2xx), failed and "
                "refused_address (each puts its delivery back in the queue, to be tried "
                "again after its back-off), gave_up (the 24 h retry window is over: the "
                "delivery is failed until `paygate webhooks retry`).",
                (
                    Query(
                        f"sum by (result) (rate(paygate_webhook_attempts_total[{RATE}]))",
                        "{{result}}",
                    ),
                ),
                unit="reqps",
            ),
            Panel(
                "Webhook retries and attempt time",
                "How much of the delivery work is going to receivers that do not take it: "
                "the share of attempts to be retried (failed or refused address; a rising "
                "share is a growing backlog), deliveries given up over the last hour "
                "(alert PaygateWebhookDeliveriesFailed), and the p95 time of an attempt "
                "(timeouts show here).",
                (
                    Query(
                        "sum(rate(paygate_webhook_attempts_total"
                        f'{{result=~"failed|refused_address"}}[{RATE}])) / '
                        f"sum(rate(paygate_webhook_attempts_total[{RATE}]))",
                        "retried share",
                    ),
                    Query(
                        'sum(increase(paygate_webhook_attempts_total{result="gave_up"}[1h]))',
                        "given up (1 h)",
                    ),
                    Query(
                        "histogram_quantile(0.95, sum by (le) "
                        f"(rate(paygate_webhook_attempt_seconds_bucket[{RATE}])))",
                        "attempt p95 (s)",
                    ),
                ),
            ),
            Panel(
                "Webhook backlog",
                "Deliveries owed, by state: pending (never tried: the dispatchers' queue, "
                "which should stay young; alert PaygateWebhookBacklogStuck when its oldest "
                "waits more than 10 minutes) and retrying (waiting for their next attempt, "
                "up to the 24 h retry window), the age of the oldest of each, and the "
                "failed ones kept until pruned. `paygate webhooks list --status pending` "
                "lists them.",
                (
                    Query("max by (state) (paygate_webhook_deliveries_pending)", "{{state}}"),
                    Query(
                        "max by (state) (paygate_webhook_deliveries_oldest_age_seconds)",
                        "oldest {{state}} (s)",
                    ),
                    Query("max(paygate_webhook_deliveries_failed)", "failed (kept)"),
                ),
                width=24,
            ),
        ),
    ),
)


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "datasource": DATASOURCE,
                "expr": query.expr,
                "legendFormat": query.legend,
                "refId": chr(ord("A") + index),
            }
            for index, query in enumerate(panel.queries)
        ],
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    panel_id, y = 1, 0
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id, y, x = panel_id + 1, y + 1, 0
        for panel in row_panels:
            if x + panel.width > 24:
                x, y = 0, y + 8
            panels.append(_panel(panel, panel_id, x, y))
            panel_id, x = panel_id + 1, x + panel.width
        y += 8
    return {
        "uid": "paygate",
        "title": "paygate",
        "description": "Payments, providers, backlogs, REST facade (telemetry/dashboard.py).",
        "tags": ["paygate"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"text": "Prometheus", "value": "prometheus"},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def dashboard_json() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    print(dashboard_json(), end="")
