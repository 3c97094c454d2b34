"""The rule every text field of every command obeys, on every intake (Avro and REST).

Invariant: a command that exists holds no text with a character that some part of the
pipeline cannot carry, and no text longer than its field allows. Such a command must be
refused where it enters, because later it can never succeed:

* PostgreSQL refuses U+0000 in any text, so every statement that names the value fails,
  and a Kafka message carrying it would be retried for ever;
* an unpaired surrogate cannot be encoded as UTF-8 (nor, so, as Avro or JSON text);
* other control characters (C0, DEL, C1) and Unicode non-characters are never meaningful
  in an identifier, a name or a metadata value, and ``\\x1f`` is the separator paygate
  derives payment and refund ids with.

Refusals carry a catalogue code: ``invalid_text`` for a forbidden character,
``invalid_request`` for a length or a type, with ``param`` naming the field. (Amount and
currency are the exception: their closed patterns refuse such text with their own one code
per field, ``invalid_amount`` and ``unsupported_currency``.) Messages name
the offending code point and its position, never the value, which may be an account number.
Lengths count code points, as PostgreSQL's ``varchar(n)`` does.
"""

from __future__ import annotations

import re
from typing import Final

from domain.errors import ErrorCode, PaygateError

# C0 controls, DEL and C1 controls; every surrogate (a str holds one only unpaired: JSON
# decoding joins a valid pair into one code point); the non-characters U+FDD0..U+FDEF and
# the last two code points of each of the 17 planes.
_FORBIDDEN: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
    + "".join(chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(17))
    + "]"
)


def forbidden_character(text: str) -> tuple[int, str] | None:
    """The first character no text field may hold, with its position; None if there is none."""
    found = _FORBIDDEN.search(text)
    return None if found is None else (found.start(), found.group())


def check_characters(value: object, param: str) -> None:
    """Refuse a string that holds a forbidden character, with ``invalid_text``.

    Anything that is not a string is left to the field's own rule, which says what the field
    must be (a closed set of codes, a pattern) in its own words.
    """
    if not isinstance(value, str):
        return
    found = forbidden_character(value)
    if found is not None:
        position, character = found
        raise PaygateError(
            ErrorCode.INVALID_TEXT,
            f"{param} must not contain control characters, unpaired surrogates or "
            f"non-characters (U+{ord(character):04X} at position {position})",
            param=param,
        )


def check_text(
    value: object,
    *,
    param: str,
    max_length: int,
    min_length: int = 1,
    name: str | None = None,
) -> str:
    """``value`` as free text of ``min_length`` to ``max_length`` characters, or a refusal.

    ``name`` is how messages call the field when ``param`` cannot (``metadata keys``).
    """
    called = name or param
    if not isinstance(value, str):
        raise PaygateError(ErrorCode.INVALID_REQUEST, f"{called} must be a string", param=param)
    check_characters(value, param)
    if not min_length <= len(value) <= max_length:
        span = f"at most {max_length}" if min_length == 0 else f"{min_length} to {max_length}"
        raise PaygateError(
            ErrorCode.INVALID_REQUEST, f"{called} must be {span} characters", param=param
        )
    return value
