"""The fast path's check of a clean batch: whole-column Arrow aggregates, no row copies.

Most batches are clean. For a clean batch, validation only has to prove that no row
breaks a rule; the rows can stay exactly as pyarrow parsed them. `CleanCheck` does that
with one pass of Arrow compute per rule (a null count, a min/max, an all-match), and
converts the columns pyarrow had to read as text: decimals (an exact pattern, then a
cast) and dates or timestamps with a `format` (DuckDB's `strptime`, the same expression
the reference uses).

Its answer is one-sided on purpose: the typed table when every row certainly passes,
or None when any row might not, or when a rule is one it does not decide exactly (a
date bound, `allowed` on a number, NaN against a bound...). On None the caller runs the
reference validation (`validate.py`), whose verdict is the definition; so a wrong
"None" costs time, never correctness, and a "clean" is only said when it is certain.
"""

from __future__ import annotations

import functools
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from batchrun.coltypes import arrow_type, decimal_parts
from batchrun.config import ColumnSpec
from batchrun.fastshape import (
    all_fixed_width,
    fixed_width,
    plain_decimal,
    shaped_datetime,
    whole_digits_fit,
)
from batchrun.validate import _typed

_NUMERIC = ("int32", "int64", "float64")


class CleanCheck:
    """Compiled once per worker from the schema; `typed_if_clean` per batch."""

    def __init__(self, columns: dict[str, ColumnSpec], typed: frozenset[str]) -> None:
        self.columns = columns
        self.typed = typed
        """Columns pyarrow already parsed to their type; the others arrive as text."""
        self.applies = all(_decidable(name, spec, name in typed) for name, spec in columns.items())
        """False when some rule or conversion is outside what this check decides."""
        self._db: duckdb.DuckDBPyConnection | None = None

    def typed_if_clean(self, table: pa.Table) -> pa.Table | None:
        """`table` (schema columns first, text where not `typed`) with every column at its
        type, if every row passes every rule; otherwise None."""
        if not self.applies:
            return None
        try:
            for index, (name, spec) in enumerate(self.columns.items()):
                column = table.column(index)
                if name not in self.typed:
                    column = self._converted(name, spec, column)
                    if column is None:
                        return None
                    table = table.set_column(index, name, column)
                if not _passes(spec, column):
                    return None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, duckdb.Error):
            return None
        return table

    def _converted(self, name: str, spec: ColumnSpec, text: pa.ChunkedArray
                   ) -> pa.ChunkedArray | None:
        parts = decimal_parts(spec.type)
        if parts:
            plain = plain_decimal(text, *parts)
            return plain if plain is not None else _decimal(text, *parts)
        if not text.null_count and spec.format:
            shaped = shaped_datetime(text, spec.format, arrow_type(spec.type))
            if shaped is not None:
                return shaped
        return self._strptime(name, spec, text)

    def _strptime(self, name: str, spec: ColumnSpec, text: pa.ChunkedArray
                  ) -> pa.ChunkedArray | None:
        """A formatted date or timestamp, through the reference's own SQL expression."""
        if self._db is None:
            self._db = duckdb.connect(config={"threads": 1})
            self._db.execute("SET TimeZone = 'UTC'")
        cell = pa.table({"v": text})
        expression = _typed("v", spec)  # untrimmed: a padded value fails, and goes slow
        self._db.register("cell", cell)
        try:
            result = self._db.sql(f"SELECT {expression} AS t FROM cell").to_arrow_table()
        finally:
            self._db.unregister("cell")
        typed = result.column(0).cast(arrow_type(spec.type))
        return typed if typed.null_count == text.null_count else None


def _decidable(name: str, spec: ColumnSpec, typed: bool) -> bool:
    """Whether `_passes` (and, for text columns, the conversion) decides this column exactly."""
    numeric = spec.type in _NUMERIC or decimal_parts(spec.type) is not None
    if not typed:
        convertible = (decimal_parts(spec.type) is not None
                       or (spec.type in ("date", "timestamp") and bool(spec.format)))
        if not convertible or spec.pattern is not None or spec.max_length is not None:
            return False
    for bound in (spec.min, spec.max):
        if bound is None:
            continue
        if not numeric or isinstance(bound, (bool, str)):
            return False
        if decimal_parts(spec.type) and bound != int(bound):
            return False  # a fractional bound against a decimal: leave the rounding to SQL
    if spec.allowed is not None and spec.type != "string":
        return False
    return True


def _passes(spec: ColumnSpec, column: pa.ChunkedArray) -> bool:
    """True only if no value of `column` (at its type) breaks one of the column's rules.
    Nulls break only `required`, as in the reference."""
    if spec.required and column.null_count:
        return False
    present = len(column) - column.null_count
    if present == 0:
        return True
    if spec.min is not None or spec.max is not None:
        if not _within(column, spec.min, spec.max):
            return False
    if spec.allowed is not None:
        options = pa.array([str(v) for v in spec.allowed], pa.string())
        if pc.sum(pc.is_in(column, value_set=options, skip_nulls=True)).as_py() != present:
            return False
    if spec.pattern is not None and not _all_match(column, spec.pattern, present):
        return False
    if spec.max_length is not None and not _short_enough(column, spec.max_length):
        return False
    return True


def _all_match(column: pa.ChunkedArray, pattern: str, present: int) -> bool:
    """Whether every value fully matches `pattern`: a fixed-width pattern over the
    character buffer (`fastshape`), any other with RE2."""
    classes = _fixed_width(pattern)
    shaped = all_fixed_width(column, classes) if classes else None
    return shaped if shaped is not None else _matches(column, pattern) == present


@functools.lru_cache(maxsize=64)
def _fixed_width(pattern: str) -> list[bytes] | None:
    return fixed_width(pattern)


def _short_enough(column: pa.ChunkedArray, max_length: int) -> bool:
    """No value longer than `max_length` characters. A UTF-8 character is at least one
    byte, so the byte lengths (from the offsets alone) decide it when they fit."""
    if (pc.max(pc.binary_length(column)).as_py() or 0) <= max_length:
        return True
    return (pc.max(pc.utf8_length(column)).as_py() or 0) <= max_length


def _within(column: pa.ChunkedArray, low: Any, high: Any) -> bool:
    if pa.types.is_floating(column.type) and pc.any(pc.is_nan(column)).as_py():
        return False  # NaN sorts above every number in SQL: let the reference decide
    extremes = pc.min_max(column)
    smallest, largest = extremes["min"].as_py(), extremes["max"].as_py()
    return not ((low is not None and smallest < low) or (high is not None and largest > high))


def _matches(column: pa.ChunkedArray, pattern: str) -> int:
    """How many values fully match `pattern` (RE2, as DuckDB's regexp_full_match)."""
    found = pc.match_substring_regex(column, pattern=f"^(?:{pattern})$")
    return int(pc.sum(found).as_py() or 0)


def _decimal(text: pa.ChunkedArray, precision: int, scale: int) -> pa.ChunkedArray | None:
    """Text to decimal(precision, scale), if every value is plainly written (digits, an
    optional sign and point, at most `scale` decimals): the values the reference accepts
    without trimming. A cast that does not fit raises, and the caller says None."""
    number = r"[+-]?[0-9]+" if scale == 0 else (
        rf"[+-]?([0-9]+(\.[0-9]{{0,{scale}}})?|\.[0-9]{{1,{scale}}})")
    if _matches(text, number) != len(text) - text.null_count:
        return None
    if not whole_digits_fit(text, precision, scale):
        return None  # the cast could wrap, not raise
    return pc.cast(text, pa.decimal128(precision, scale))
