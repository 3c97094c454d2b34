"""``paygate reconcile settle``'s command line, as the CLI parses it."""

from __future__ import annotations

import pytest

from domain.errors import ErrorCode, PaygateError
from paygate.cli import build_parser, production_uses
from paygate.production_checks import Uses
from paygate.settle_args import fail_reason_of

pytestmark = pytest.mark.unit


def test_reconcile_alone_is_still_one_pass() -> None:
    args = build_parser().parse_args(["reconcile"])
    assert (args.command, args.reconcile_action) == ("reconcile", None)


def test_settle_takes_an_id_and_an_optional_failure_with_its_reason() -> None:
    args = build_parser().parse_args(
        ["reconcile", "settle", "p-1", "--failed", "--reason", "nothing at the provider"]
    )
    assert (args.reconcile_action, args.id) == ("settle", "p-1")
    assert fail_reason_of(args) == "nothing at the provider"
    assert fail_reason_of(build_parser().parse_args(["reconcile", "settle", "p-1"])) is None


@pytest.mark.parametrize(
    ("argv", "param"),
    [
        (["--failed"], "reason"),
        (["--reason", "why"], "failed"),
    ],
    ids=["failed-without-reason", "reason-without-failed"],
)
def test_a_half_given_pair_is_refused(argv: list[str], param: str) -> None:
    args = build_parser().parse_args(["reconcile", "settle", "p-1", *argv])
    with pytest.raises(PaygateError) as refused:
        fail_reason_of(args)
    assert (refused.value.code, refused.value.param) == (ErrorCode.INVALID_REQUEST, param)


def test_settle_is_checked_for_production_as_reconcile_is() -> None:
    # It calls the providers: production refuses the sandbox for it, as for a pass.
    assert Uses.PROVIDERS in production_uses("reconcile")
