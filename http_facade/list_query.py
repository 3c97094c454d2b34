"""The query string of ``GET /v1/payments``: ``orderId``, ``limit``, ``startingAfter``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from domain.errors import ErrorCode, PaygateError
from domain.payments import is_payment_request_id

DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 100
_ORDER_ID: Final = re.compile(r"\A[A-Za-z0-9._:\-]{1,64}\Z")
_LIMIT: Final = re.compile(r"\A[0-9]{1,3}\Z")
_KNOWN: Final = frozenset({"orderId", "limit", "startingAfter"})
_PLAIN_NAME: Final = re.compile(r"\A[A-Za-z_]{1,64}\Z")


@dataclass(frozen=True, slots=True)
class ListQuery:
    order_id: str
    limit: int
    starting_after: str | None


def parse_list_query(query: Mapping[str, str]) -> ListQuery:
    """Check the query string; raise ``invalid_request`` naming the parameter at fault."""
    for name in query:
        if name not in _KNOWN:
            # Named only if it cannot be a number: a client's name is no field of ours, and
            # one that holds a digit may be an account number typed into the URL.
            if _PLAIN_NAME.match(name):
                raise _invalid(f"{name} is not a known query parameter", name)
            raise PaygateError(
                ErrorCode.INVALID_REQUEST,
                "the query has a parameter that is not known (orderId, limit, startingAfter)",
            )
    order_id = query.get("orderId")
    if order_id is None:
        raise _invalid("orderId is required", "orderId")
    if not _ORDER_ID.match(order_id):
        raise _invalid("orderId must be 1 to 64 letters, digits or . _ : -", "orderId")
    raw_limit = query.get("limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        if not _LIMIT.match(raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise _invalid(f"limit must be a whole number from 1 to {MAX_LIMIT}", "limit")
        limit = int(raw_limit)
    starting_after = query.get("startingAfter")
    if starting_after is not None and not is_payment_request_id(starting_after):
        raise _invalid("startingAfter must be a paymentRequestId", "startingAfter")
    return ListQuery(order_id, limit, starting_after)


def _invalid(message: str, param: str) -> PaygateError:
    return PaygateError(ErrorCode.INVALID_REQUEST, message, param=param)
