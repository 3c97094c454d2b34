"""Structured JSON log lines, with account numbers scrubbed as a last line of defence.

Code never logs a clear account number on purpose (it logs masked references); the
scrubber catches accidents, such as a library echoing a request, by masking every run of
8 or more digits that is not part of a longer word.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Final

_LONG_DIGITS: Final = re.compile(r"(?<![A-Za-z0-9])(\d{4,})(\d{4})(?![A-Za-z0-9])")
_STANDARD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def scrub(text: str) -> str:
    """Mask digit runs of 8+ characters to their last four: ``4242424242424242`` -> ``****4242``."""
    return _LONG_DIGITS.sub(lambda m: "****" + m.group(2), text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return scrub(json.dumps(line, default=str, separators=(",", ":")))


def configure_logging(level: str = "INFO") -> None:
    """One JSON line per record on stderr, for the whole process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka is chatty at INFO about every rebalance step; its warnings still show.
    logging.getLogger("aiokafka").setLevel(max(root.level, logging.WARNING))
    # Alembic lists its plugins at INFO when first imported; the revisions it runs are
    # logged by persistence.migrate's filtered logger.
    logging.getLogger("alembic.runtime.plugins").setLevel(max(root.level, logging.WARNING))
