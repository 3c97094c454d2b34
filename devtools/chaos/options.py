"""The chaos run's command line, parsed into one frozen :class:`ChaosOptions`."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PROG = "paygate chaos"
KILL_SCHEDULES = ("busy", "fixed")
# The consumers' provider timeout is this much above the acquirer's account latency, so a
# latency number answers in time (its 503 then starts a retry back-off) while an injected
# hang (longer still) leaves the payment in doubt.
_TIMEOUT_ABOVE_LATENCY_S = 2.0


@dataclass(frozen=True, slots=True)
class ChaosOptions:
    payments: int = 5000
    kills: int = 10
    seed: int = 1
    duplicate_rate: float = 0.05
    unkeyed_duplicate_rate: float = 0.05
    refund_share: float = 0.2
    action_share: float = 0.05
    authorize_share: float = 0.1
    action_ttl_s: float = 15.0
    authorization_hold_s: float = 30.0
    feed_s: float = 30.0
    consumers: int = 2
    drain_timeout_s: float = 180.0
    failure_rate: float = 0.02
    timeout_rate: float = 0.02
    hang_s: float = 6.0
    account_latency_s: float = 2.0
    zombies: int = 3
    database_url: str | None = None
    work_dir: Path | None = None
    own_broker: bool = False
    keep_work_dir: bool = False
    kill_schedule: str = "busy"

    @property
    def provider_timeout_s(self) -> float:
        """The consumers' provider timeout."""
        return self.account_latency_s + _TIMEOUT_ABOVE_LATENCY_S


def build_parser() -> argparse.ArgumentParser:
    defaults = ChaosOptions()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Feed payments while SIGKILLing consumers and restarting the broker, then "
        "check that every payment took effect exactly once.",
    )
    add = parser.add_argument
    add("--payments", type=int, default=defaults.payments, help="payments to feed (unique ids)")
    add("--kills", type=int, default=defaults.kills, help="minimum consumer SIGKILLs")
    add(
        "--zombies",
        type=int,
        default=defaults.zombies,
        help="minimum zombie episodes: a consumer SIGSTOPped (in a retry back-off when one "
        "is in flight) until the group rebalanced without it, then SIGCONTed while another "
        "consumer handles its payments",
    )
    add("--seed", type=int, default=defaults.seed, help="seeds the feed, faults and acquirer")
    add(
        "--duplicate-rate",
        type=float,
        default=defaults.duplicate_rate,
        help="share of payments (and of refunds) re-sent later with the same idempotency key",
    )
    add(
        "--unkeyed-duplicate-rate",
        type=float,
        default=defaults.unkeyed_duplicate_rate,
        help="share of payments (and of refunds) sent again 0.05-2 s after the original, "
        "without a Kafka key or keyed by their own id instead of the order id",
    )
    add(
        "--refund-share",
        type=float,
        default=defaults.refund_share,
        help="share of orders whose payment is followed by refunds (partial, rest, excess)",
    )
    add(
        "--action-share",
        type=float,
        default=defaults.action_share,
        help="share of payments paid with the number that requires a payer action; the "
        "harness approves, denies, abandons or approves too late each one's action",
    )
    add(
        "--authorize-share",
        type=float,
        default=defaults.authorize_share,
        help="share of payments created authorize-only, then captured (whole or partly) or "
        "canceled, some twice, some with a capture and a cancel racing",
    )
    add(
        "--action-ttl-s",
        type=float,
        default=defaults.action_ttl_s,
        help="how long the acquirer waits for a payer before the action expires",
    )
    add(
        "--authorization-hold-s",
        type=float,
        default=defaults.authorization_hold_s,
        help="how long the acquirer holds an authorization before it expires on its own",
    )
    add(
        "--kill-schedule",
        choices=KILL_SCHEDULES,
        default=defaults.kill_schedule,
        help="busy: each kill 1-3 s after the consumers resumed work since the last one; "
        "fixed: a kill every 1-3 s, whatever the consumers are doing",
    )
    add("--feed-s", type=float, default=defaults.feed_s, help="seconds the feed is spread over")
    add("--consumers", type=int, default=defaults.consumers, help="consumer processes at once")
    add(
        "--drain-timeout-s",
        type=float,
        default=defaults.drain_timeout_s,
        help="bound on waiting for every payment to reach a final state",
    )
    add("--failure-rate", type=float, default=defaults.failure_rate, help="acquirer 503 share")
    add("--timeout-rate", type=float, default=defaults.timeout_rate, help="acquirer hang share")
    add("--hang-s", type=float, default=defaults.hang_s, help="how long an injected hang lasts")
    add(
        "--account-latency-s",
        type=float,
        default=defaults.account_latency_s,
        help="how long the acquirer's latency test numbers wait before deciding; the "
        "consumers' provider timeout is 2 s more",
    )
    add("--database-url", help="SQLAlchemy URL of the store (default: a fresh SQLite file)")
    add("--work-dir", type=Path, help="where logs, ledger and store go (default: a temp dir)")
    add(
        "--own-broker",
        action="store_true",
        help="start a local broker even when KAFKA_BOOTSTRAP_SERVERS is set",
    )
    add(
        "--keep-work-dir",
        action="store_true",
        help="keep the temp work dir even when the run passes (it is always kept on failure)",
    )
    return parser


def parse_options(argv: Sequence[str]) -> ChaosOptions:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    options = ChaosOptions(
        payments=args.payments,
        kills=args.kills,
        seed=args.seed,
        duplicate_rate=args.duplicate_rate,
        unkeyed_duplicate_rate=args.unkeyed_duplicate_rate,
        refund_share=args.refund_share,
        action_share=args.action_share,
        authorize_share=args.authorize_share,
        action_ttl_s=args.action_ttl_s,
        authorization_hold_s=args.authorization_hold_s,
        feed_s=args.feed_s,
        consumers=args.consumers,
        drain_timeout_s=args.drain_timeout_s,
        failure_rate=args.failure_rate,
        timeout_rate=args.timeout_rate,
        hang_s=args.hang_s,
        account_latency_s=args.account_latency_s,
        zombies=args.zombies,
        database_url=args.database_url,
        work_dir=args.work_dir,
        own_broker=args.own_broker,
        keep_work_dir=args.keep_work_dir,
        kill_schedule=args.kill_schedule,
    )
    problem = _problem(options)
    if problem is not None:
        parser.error(problem)  # exits with code 2, like any argparse error
    return options


def _problem(options: ChaosOptions) -> str | None:
    if options.payments < 1:
        return "--payments must be at least 1"
    if options.kills < 0:
        return "--kills must not be negative"
    if options.zombies < 0:
        return "--zombies must not be negative"
    if options.consumers < 1:
        return "--consumers must be at least 1"
    for name, value in (
        ("--duplicate-rate", options.duplicate_rate),
        ("--unkeyed-duplicate-rate", options.unkeyed_duplicate_rate),
        ("--refund-share", options.refund_share),
        ("--action-share", options.action_share),
        ("--authorize-share", options.authorize_share),
        ("--failure-rate", options.failure_rate),
        ("--timeout-rate", options.timeout_rate),
    ):
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            return f"{name} must be between 0 and 1"
    for name, value in (
        ("--feed-s", options.feed_s),
        ("--drain-timeout-s", options.drain_timeout_s),
        ("--hang-s", options.hang_s),
        ("--account-latency-s", options.account_latency_s),
        ("--action-ttl-s", options.action_ttl_s),
        ("--authorization-hold-s", options.authorization_hold_s),
    ):
        if not (math.isfinite(value) and value >= 0.0):
            return f"{name} must be a number >= 0"
    if options.action_share + options.authorize_share > 1.0:
        return "--action-share and --authorize-share must add up to at most 1"
    if options.hang_s <= options.provider_timeout_s:
        return (
            f"--hang-s must exceed the consumers' provider timeout "
            f"({options.provider_timeout_s:g} s: --account-latency-s + 2 s), or an injected "
            "hang never leaves a payment in doubt"
        )
    return None
