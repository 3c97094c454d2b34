"""Structured JSON log lines, with account numbers scrubbed as a last line of defence.

Code never logs a clear account number on purpose (it logs masked references); the
scrubber catches accidents, such as a library echoing a request. It masks, to their last
four characters (``****4242``), what looks like an account number and only that:

- a card number or an IBAN, as the one detector finds them (domain.account_numbers, whose
  docstring says what it finds and what it leaves: order ids, timestamps, UUIDs), in the
  line as written: JSON escapes every character outside ASCII (``\\u200b``), and the
  detector reads through those escapes, so a zero-width space or a no-break space inside a
  number hides nothing;
- whatever string is logged under an account field (:data:`DEFAULT_ACCOUNT_FIELDS`, or the
  fields given to :func:`configure_logging`), whatever it looks like.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final

from domain.account_numbers import mask, scrub
from telemetry.log_throttle import RepeatThrottle

# Log fields whose string values are account numbers, whatever they look like.
DEFAULT_ACCOUNT_FIELDS: Final = frozenset(
    {"account_number", "payer_account", "payee_account", "iban", "pan", "card_number"}
)
_STANDARD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def _mask_fields(value: Any, fields: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {
            key: mask(item)
            if isinstance(item, str) and str(key).lower() in fields
            else _mask_fields(item, fields)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_mask_fields(item, fields) for item in value]
    return value


class JsonFormatter(logging.Formatter):
    def __init__(self, account_fields: Iterable[str] = DEFAULT_ACCOUNT_FIELDS) -> None:
        super().__init__()
        self._account_fields = frozenset(field.lower() for field in account_fields)

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
        line = _mask_fields(line, self._account_fields)
        return scrub(json.dumps(line, default=str, separators=(",", ":")))


def configure_logging(
    level: str = "INFO", account_fields: Iterable[str] = DEFAULT_ACCOUNT_FIELDS
) -> None:
    """One JSON line per record on stderr, for the whole process; string values of
    ``account_fields`` are masked wherever they appear in a line's fields."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(account_fields))
    # While a broker is down aiokafka logs each reconnection attempt at error level, some
    # 70 lines a second: one line per template a minute, with how many were dropped.
    handler.addFilter(RepeatThrottle("aiokafka"))
    # Likewise the OTLP exporter while its collector is away (a retry line per batch).
    handler.addFilter(RepeatThrottle("opentelemetry"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka is chatty at INFO about every rebalance step; its warnings still show.
    logging.getLogger("aiokafka").setLevel(max(root.level, logging.WARNING))
    # Alembic lists its plugins at INFO when first imported; the revisions it runs are
    # logged by persistence.migrate's filtered logger.
    logging.getLogger("alembic.runtime.plugins").setLevel(max(root.level, logging.WARNING))
