"""How dead letters are shown: one text line or one JSON object per entry.

The value's bytes are never shown, in any form: they may hold account numbers. Only their
size is.
"""

from __future__ import annotations

import json
from typing import Any

from paygate.dlq.entries import DeadLetter
from paygate.dlq.republish import Republished


def show_key(key: bytes | None) -> str | None:
    """The key as text (keys are order ids); undecodable bytes as backslash escapes."""
    if key is None:
        return None
    return key.decode("utf-8", errors="backslashreplace")


def entry_fields(entry: DeadLetter) -> dict[str, Any]:
    return {
        "dlq_partition": entry.handle.partition,
        "dlq_offset": entry.handle.offset,
        "handle": str(entry.handle),
        "error_code": entry.error_code,
        "reason": entry.reason,
        "message": entry.message,
        "original_topic": entry.original_topic,
        "original_partition": entry.original_partition,
        "original_offset": entry.original_offset,
        "first_seen": entry.first_seen,
        "dead_lettered_at": (
            entry.dead_lettered_at.isoformat() if entry.dead_lettered_at else None
        ),
        "value_size": entry.value_size,
        "key": show_key(entry.key),
    }


def _text(value: object) -> str:
    if value is None:
        return "-"
    text = str(value)
    # Quote what has spaces or quotes, so a line splits back into its fields.
    return json.dumps(text) if (not text or any(c in text for c in ' "\t\n')) else text


def entry_line(entry: DeadLetter) -> str:
    original = (
        f"{entry.original_topic or '-'}:{_text(entry.original_partition)}"
        f":{_text(entry.original_offset)}"
    )
    return " ".join(
        [
            str(entry.handle),
            f"code={_text(entry.error_code)}",
            f"reason={_text(entry.reason)}",
            f"original={original}",
            f"first_seen={_text(entry.first_seen)}",
            f"size={entry.value_size}",
            f"key={_text(show_key(entry.key))}",
            f"message={_text(entry.message)}",
        ]
    )


def entry_json(entry: DeadLetter) -> str:
    return json.dumps(entry_fields(entry), sort_keys=False)


def republished_fields(done: Republished) -> dict[str, Any]:
    return {
        "from": done.source,
        "handle": str(done.entry.handle),
        "error_code": done.entry.error_code,
        "topic": done.topic,
        "partition": done.partition,
        "offset": done.offset,
        "republished_at": done.at,
        "value_size": done.entry.value_size,
        "key": show_key(done.entry.key),
    }


def republished_line(done: Republished) -> str:
    return (
        f"republished {done.entry.handle} code={_text(done.entry.error_code)} "
        f"key={_text(show_key(done.entry.key))} size={done.entry.value_size} "
        f"-> {done.topic}:{done.partition}:{done.offset}"
    )


def republished_json(done: Republished) -> str:
    return json.dumps(republished_fields(done))
