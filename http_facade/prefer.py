"""The ``Prefer: wait=N`` request header (RFC 7240), as the create endpoint reads it.

Only ``wait`` means something here. Other preferences (``respond-async``,
``return=minimal``, ...) are ignored, as RFC 7240 asks of a server that does not
implement them; a ``wait`` whose value is not a whole number of seconds >= 1 is refused,
because silently not waiting would surprise a client that asked to.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from domain.errors import ErrorCode, PaygateError

_WAIT_VALUE: Final = re.compile(r"\A[0-9]{1,9}\Z")


def requested_wait(prefer_headers: Iterable[str], max_wait_s: int) -> int | None:
    """Seconds to wait for a final result, clamped to ``max_wait_s``; None if not asked."""
    wait: int | None = None
    for header in prefer_headers:
        for preference in header.split(","):
            # A preference may carry parameters after ";"; wait takes none, so drop them.
            name, _, value = preference.split(";", 1)[0].partition("=")
            if name.strip().lower() != "wait":
                continue
            value = value.strip().strip('"')
            if not _WAIT_VALUE.match(value) or int(value) < 1:
                raise PaygateError(
                    ErrorCode.INVALID_REQUEST,
                    "Prefer: wait must be a whole number of seconds, at least 1",
                    param="Prefer",
                )
            wait = int(value)
    if wait is None:
        return None
    return min(wait, max_wait_s)
