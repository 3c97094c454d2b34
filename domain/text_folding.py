"""Text as a reader reads it: what a number can hide behind taken away, with the way back.

A number can be written so that its digits are not side by side in the string while a
person, or the program that decodes it, still reads it whole:

- invisible characters between the digits (zero-width space, non-joiner and joiner, word
  joiner, byte order mark, soft hyphen, direction marks; :data:`INVISIBLE_CHARACTERS`):
  shown as nothing, pasted along with the number;
- percent-encoding, as in a URL's path or query string (``4242%204242...``, ``%34%32``),
  which whoever reads the URL decodes: an access log, a span's ``http.target``, a webhook
  endpoint's url; a URL encoded twice (``%2520``) is decoded again;
- JSON's ``\\uXXXX`` escapes: a JSON log line escapes every character that is not ASCII,
  so a no-break space or a zero-width space reaches the log scrubber as six characters.

:func:`folded` undoes the three; :func:`fold` does the same and keeps, for each character
of the folded text, the span of the original it was read from, so a finding in the folded
text is masked in the original (:meth:`FoldedText.original_span`), and is asked for only
once something was found. Text with none of the three (a log line of ASCII without a ``%``
or a backslash) is not copied: both return None after a few scans in C.

Pure: the standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final


def _chars(*ranges: tuple[int, int]) -> str:
    return "".join(chr(code) for first, last in ranges for code in range(first, last + 1))


# Characters that show nothing: soft hyphen, combining grapheme joiner, Arabic letter mark,
# Mongolian vowel separator, zero-width space/non-joiner/joiner, left-to-right and
# right-to-left marks, the bidi embeddings and overrides, word joiner, invisible operators,
# the bidi isolates and deprecated format characters, and the byte order mark (U+FEFF, the
# zero-width no-break space).
INVISIBLE_CHARACTERS: Final = _chars(
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
)
_INVISIBLE: Final = re.compile(f"[{re.escape(INVISIBLE_CHARACTERS)}]")
# Any number of backslashes: a JSON text quoted inside a JSON log line escapes its own.
_JSON_ESCAPE: Final = re.compile(r"\\+u([0-9A-Fa-f]{4})")
_PERCENT_RUN: Final = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
# Encoded twice is what a client that encodes an encoded URL sends; more is read as it is.
_PERCENT_PASSES: Final = 2
_ENCODED_LENGTH: Final = 3  # "%XX" per byte


@dataclass(frozen=True, slots=True)
class FoldedText:
    """``text``, whose character ``i`` was read from ``original[starts[i]:ends[i]]``."""

    text: str
    starts: list[int]
    ends: list[int]

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """Where ``text[start:end]`` (not empty) was read from in the original."""
        return self.starts[start], self.ends[end - 1]


# What a match of a folding pattern reads as: characters, each with the span of the text
# being folded that it was read from.
_Decoded = Iterable[tuple[str, int, int]]


def _rewritten(
    view: FoldedText, pattern: re.Pattern[str], decode: Callable[[re.Match[str]], _Decoded]
) -> FoldedText:
    text, starts, ends = view.text, view.starts, view.ends
    chars: list[str] = []
    new_starts: list[int] = []
    new_ends: list[int] = []
    kept_from = 0
    for match in pattern.finditer(text):
        chars.append(text[kept_from : match.start()])
        new_starts += starts[kept_from : match.start()]
        new_ends += ends[kept_from : match.start()]
        for char, start, end in decode(match):
            chars.append(char)
            new_starts.append(starts[start])
            new_ends.append(ends[end - 1])
        kept_from = match.end()
    chars.append(text[kept_from:])
    new_starts += starts[kept_from:]
    new_ends += ends[kept_from:]
    return FoldedText("".join(chars), new_starts, new_ends)


def _json_unescaped(match: re.Match[str]) -> _Decoded:
    return [(chr(int(match.group(1), 16)), match.start(), match.end())]


def _utf8_length(lead: int) -> int:
    if lead >= 0xF0:
        return 4
    if lead >= 0xE0:
        return 3
    return 2 if lead >= 0xC0 else 1


def _percent_decoded(match: re.Match[str]) -> _Decoded:
    """The run's bytes read as UTF-8, a byte that starts no character as U+FFFD."""
    data = bytes.fromhex(match.group(0).replace("%", ""))
    base = match.start()
    decoded: list[tuple[str, int, int]] = []
    at = 0
    while at < len(data):
        length = _utf8_length(data[at])
        try:
            char = data[at : at + length].decode("utf-8")
        except UnicodeDecodeError:
            char, length = "\ufffd", 1
        start = base + at * _ENCODED_LENGTH
        decoded.append((char, start, start + length * _ENCODED_LENGTH))
        at += length
    return decoded


def _dropped(match: re.Match[str]) -> _Decoded:
    return ()


def _unchanged(text: str) -> FoldedText:
    return FoldedText(text, list(range(len(text))), list(range(1, len(text) + 1)))


def _substituted(
    text: str, pattern: re.Pattern[str], decode: Callable[[re.Match[str]], _Decoded]
) -> str:
    return pattern.sub(lambda match: "".join(char for char, _, _ in decode(match)), text)


_Step = tuple[re.Pattern[str], Callable[[re.Match[str]], _Decoded]]


def _steps(text: str) -> tuple[list[_Step], str]:
    """The steps that change ``text``, in their order, and the text they make."""
    steps: list[_Step] = []
    current = text
    # Each step first looks for a character its pattern needs: a scan in C.
    if "\\u" in current and _JSON_ESCAPE.search(current):
        steps.append((_JSON_ESCAPE, _json_unescaped))
        current = _substituted(current, _JSON_ESCAPE, _json_unescaped)
    for _ in range(_PERCENT_PASSES):
        if "%" not in current or not _PERCENT_RUN.search(current):
            break
        steps.append((_PERCENT_RUN, _percent_decoded))
        current = _substituted(current, _PERCENT_RUN, _percent_decoded)
    # Every invisible character is outside ASCII, and str.isascii() reads a flag.
    if not current.isascii() and _INVISIBLE.search(current):
        steps.append((_INVISIBLE, _dropped))
        current = _INVISIBLE.sub("", current)
    return steps, current


def folded(text: str) -> str | None:
    """``text`` with JSON escapes and percent-encoding decoded and invisible characters
    removed, or None when it holds none of them (then it reads as it is)."""
    if text.isascii() and "%" not in text and "\\" not in text:
        return None  # most log lines: three scans in C
    steps, current = _steps(text)
    return current if steps else None


def fold(text: str) -> FoldedText | None:
    """:func:`folded`, with where each of its characters was read from: dearer, so asked
    for only when something was found in the folded text."""
    steps, _ = _steps(text)
    if not steps:
        return None
    view = _unchanged(text)
    for pattern, decode in steps:
        view = _rewritten(view, pattern, decode)
    return view
