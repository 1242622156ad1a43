"""Byte-shape checks of text columns at numpy speed, for the fast path's clean check.

A clean batch's decimals, formatted timestamps and fixed-width patterns (`^SKU-[0-9]{6}$`)
were checked one value at a time (a regular expression per value, DuckDB's strptime):
a quarter of a clean batch's CPU. Their grammar is simple enough to check over the
column's character buffer as a whole, with a few vectorised passes. Every function here
answers one-sided, like `fastcheck`: a result only when it is certain to equal the
reference's (validate.py), None ("not decided here") otherwise, including whenever a
column has nulls: then the caller takes the general route.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_DIGITS = b"0123456789"
_ISO_SHAPES = {
    "%Y-%m-%d %H:%M:%S": "dddd-dd-dd dd:dd:dd",
    "%Y-%m-%dT%H:%M:%S": "dddd-dd-ddTdd:dd:dd",
    "%Y-%m-%d": "dddd-dd-dd",
}
"""strptime formats whose every match Arrow's ISO-8601 cast reads to the same value: a
value of exactly this shape (d a digit) is a valid date and time (month, leap day, hour
< 24...) for Arrow's cast exactly when it is for DuckDB's strptime; year 0 (1 BC), which
DuckDB takes and Arrow refuses, fails the cast, so the general route decides it."""


def _layout(chunk: pa.Array) -> tuple[np.ndarray, np.ndarray] | None:
    """A string chunk without nulls as (its characters, each value's start offset into
    them, plus the end): None for a chunk with nulls or of another type."""
    if chunk.null_count or not pa.types.is_string(chunk.type):
        return None
    offsets = np.frombuffer(chunk.buffers()[1], np.int32, len(chunk) + 1, chunk.offset * 4)
    data = chunk.buffers()[2]
    start, end = int(offsets[0]), int(offsets[-1])
    characters = (np.frombuffer(data, np.uint8, end - start, start) if data is not None and end > start
                  else np.zeros(0, np.uint8))
    return characters, offsets - start


def _classes(text: str) -> list[bytes]:
    return [_DIGITS if char == "d" else char.encode() for char in text]


def _all_shaped(chunk: pa.Array, classes: list[bytes]) -> bool:
    """Whether every value of `chunk` is exactly len(classes) bytes, byte i one of classes[i]."""
    layout = _layout(chunk)
    if layout is None:
        return False
    characters, offsets = layout
    width = len(classes)
    if not np.all(np.diff(offsets) == width):
        return False
    grid = characters.reshape(len(chunk), width)
    ranges = [_as_range(allowed) for allowed in classes]
    if all(r is not None for r in ranges):  # one subtract and one compare over the grid
        low = np.array([r[0] for r in ranges], np.uint8)  # type: ignore[index]
        span = np.array([r[1] for r in ranges], np.uint8)  # type: ignore[index]
        return bool(((grid - low) <= span).all())
    table = np.zeros((width, 256), bool)
    for position, allowed in enumerate(classes):
        table[position, np.frombuffer(allowed, np.uint8)] = True
    return bool(table[np.arange(width), grid].all())


def _as_range(allowed: bytes) -> tuple[int, int] | None:
    """(first byte, count - 1) when `allowed` is one run of consecutive bytes."""
    low, high = min(allowed), max(allowed)
    return (low, high - low) if high - low + 1 == len(set(allowed)) else None


def shaped_datetime(text: pa.ChunkedArray, fmt: str, target: pa.DataType
                    ) -> pa.ChunkedArray | None:
    """`text` parsed with strptime format `fmt` to `target`, when `fmt` is one of the ISO
    shapes and every value has that exact shape and is a valid date/time; else None."""
    shape = _ISO_SHAPES.get(fmt)
    if shape is None or not all(_all_shaped(chunk, _classes(shape)) for chunk in text.chunks):
        return None
    try:
        return pc.cast(text, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def plain_decimal(text: pa.ChunkedArray, precision: int, scale: int) -> pa.ChunkedArray | None:
    """`text` cast to decimal(precision, scale), when every value is plainly written:
    unsigned digits with at most one point, at least one digit, at most `scale` after
    the point (values the reference's `[+-]?([0-9]+(\\.[0-9]{0,s})?|\\.[0-9]{1,s})`
    takes); None when not decided here: a sign, any other byte, a value that breaks the
    pattern or does not fit the precision, a null."""
    texts = [_characters(chunk) for chunk in text.chunks]
    if any(t is None or t.translate(None, b"0123456789.") for t in texts):
        return None
    where = pc.find_substring(text, ".")
    has_point = pc.greater_equal(where, 0)
    points = sum(t.count(b".") for t in texts if t is not None)
    if (pc.sum(has_point).as_py() or 0) != points or (points and scale == 0):
        return None  # two points in a value, or a point where the pattern has none
    length = pc.binary_length(text)
    digits = pc.subtract(length, pc.cast(has_point, pa.int32()))
    decimals = pc.if_else(has_point, pc.subtract(pc.subtract(length, where), 1), 0)
    if len(text) and (pc.min(digits).as_py() < 1 or pc.max(decimals).as_py() > scale):
        return None  # a point alone, an empty value, or too many decimals
    if (len(text) and pc.max(pc.subtract(digits, decimals)).as_py() > precision - scale
            and not whole_digits_fit(text, precision, scale)):
        return None
    try:
        return pc.cast(text, pa.decimal128(precision, scale))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def whole_digits_fit(text: pa.ChunkedArray, precision: int, scale: int) -> bool:
    """Whether no value of `text` (signed decimals, at most `scale` decimals) has more
    digits before its point than decimal(precision, scale) holds. Arrow's cast to
    decimal128(38, s) does not raise for such a value but wraps it silently (39 nines,
    or 37 digits at scale 2, read as other numbers), so it must never reach the cast.
    Leading zeros do not count."""
    whole = pc.replace_substring_regex(text, pattern=r"^[+-]?0*|\..*", replacement="")
    longest = pc.max(pc.count_substring_regex(whole, pattern="[0-9]")).as_py()
    return (longest or 0) <= precision - scale


def _characters(chunk: pa.Array) -> bytes | None:
    """The characters of a string chunk without nulls, as one bytes; None otherwise."""
    layout = _layout(chunk)
    return None if layout is None else layout[0].tobytes()


_CLASS = re.compile(r"\[(?:0-9|A-Z|a-z)+\]|\\d|[A-Za-z0-9_\-:/ ]|\\[.\-_/ ]")
_REPEAT = re.compile(r"\{(\d{1,3})\}")
_RANGES = {"0-9": _DIGITS, "A-Z": bytes(range(65, 91)), "a-z": bytes(range(97, 123))}


def fixed_width(pattern: str) -> list[bytes] | None:
    """A regular expression that is a fixed sequence of ASCII literals and classes
    (`^SKU-[0-9]{6}$`, `[A-Z]{3}`, `\\d{4}`), optionally anchored, as the bytes allowed
    at each position; None for anything else (alternation, `.`, `*`, `?`, ranges of
    counts...), which then goes to the regular-expression engine."""
    body = pattern.removeprefix("^")
    body = body[:-1] if body.endswith("$") and not body.endswith("\\$") else body
    classes: list[bytes] = []
    position = 0
    while position < len(body):
        token = _CLASS.match(body, position)
        if token is None:
            return None
        allowed = _allowed(token.group())
        position = token.end()
        repeat = _REPEAT.match(body, position)
        count = int(repeat.group(1)) if repeat else 1
        position = repeat.end() if repeat else position
        classes.extend([allowed] * count)
    return classes or None


def _allowed(token: str) -> bytes:
    if token == "\\d":
        return _DIGITS
    if token.startswith("["):
        inner = token[1:-1]
        return b"".join(_RANGES[inner[i:i + 3]] for i in range(0, len(inner), 3))
    return token[-1].encode()


def all_fixed_width(text: pa.ChunkedArray, classes: list[bytes]) -> bool | None:
    """Whether every value of `text` matches the fixed-width `classes` in full; None when
    not decided here (a chunk with nulls)."""
    if any(chunk.null_count for chunk in text.chunks):
        return None
    return all(_all_shaped(chunk, classes) for chunk in text.chunks)
