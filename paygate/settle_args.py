"""The arguments of ``paygate reconcile settle`` (parsed before anything heavy is imported;
the command itself is paygate.settle_command)."""

from __future__ import annotations

import argparse

from domain.errors import ErrorCode, PaygateError


def add_settle_parser(reconcile: argparse.ArgumentParser) -> None:
    """``settle`` under ``paygate reconcile`` (without it, ``reconcile`` runs one pass)."""
    actions = reconcile.add_subparsers(dest="reconcile_action")
    settle = actions.add_parser(
        "settle",
        help="settle by hand a payment or refund withheld past its provider's window",
    )
    settle.add_argument("id", help="the payment (paymentRequestId) or refund id")
    settle.add_argument(
        "--failed",
        action="store_true",
        help="fail it if the provider still holds nothing under its key (needs --reason)",
    )
    settle.add_argument("--reason", help="why, stored with the failure and logged")


def fail_reason_of(args: argparse.Namespace) -> str | None:
    """The reason to fail with, None for no failure; a refusal for a half-given pair."""
    if args.failed and args.reason is None:
        raise PaygateError(ErrorCode.INVALID_REQUEST, "--failed needs --reason", param="reason")
    if args.reason is not None and not args.failed:
        raise PaygateError(
            ErrorCode.INVALID_REQUEST, "--reason is stored only with --failed", param="failed"
        )
    return str(args.reason) if args.failed else None
