"""schemathesis hooks of ``test_schemathesis.py``: every generated payment is a new order.

Left alone, generation keeps coming back to the same few values ("0"): after the first
payment of order "0", every other create is ``409 order_already_paid`` and the pipeline is
hardly exercised. A generated ``orderId`` that is valid gets a unique suffix instead, so
most creates are new payments that the consumer processes, and that the stateful phase
then reads, lists and refunds. Invalid ones are left invalid.

Loaded by schemathesis from ``SCHEMATHESIS_HOOKS`` (a file path), not by pytest.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Final

import schemathesis

_IDENTIFIER: Final = re.compile(r"\A[A-Za-z0-9._:\-]{1,64}\Z")
_SUFFIXES: Final = itertools.count()
_CREATE_PAYMENT: Final = "POST /v1/payments"


@schemathesis.hook
def map_body(context: schemathesis.HookContext, body: Any) -> Any:
    if context.operation is None or context.operation.label != _CREATE_PAYMENT:
        return body
    if not isinstance(body, dict):
        return body
    order_id = body.get("orderId")
    if not isinstance(order_id, str) or not _IDENTIFIER.match(order_id):
        return body
    return {**body, "orderId": f"{order_id[:48]}.{next(_SUFFIXES):x}"}
