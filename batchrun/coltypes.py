"""The one type registry: batchrun's column-type names, their grammar, and their Arrow and
DuckDB spellings.

A job file writes a type as one of `NAMES` or `decimal(p,s)` (1 <= p <= 38, s <= p, spaces
and case allowed); `normalize` turns that into the canonical name every other module sees
("Decimal( 12, 2 )" → "decimal(12,2)"). pyarrow is imported on first use, so validating a
job file does not pay for it.
"""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

NAMES: tuple[str, ...] = ("string", "int32", "int64", "float64", "bool", "date", "timestamp")
"""The scalar type names, in the order the docs list them."""
DECIMAL_MAX_PRECISION = 38
"""Arrow's decimal128 holds at most 38 digits."""
GRAMMAR = "string | int32 | int64 | float64 | decimal(p,s) | bool | date | timestamp"

_DECIMAL = re.compile(r"^decimal\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
_DUCKDB = {
    "string": "VARCHAR", "int32": "INTEGER", "int64": "BIGINT", "float64": "DOUBLE",
    "bool": "BOOLEAN", "date": "DATE", "timestamp": "TIMESTAMP",
}


def normalize(written: str) -> str:
    """The canonical name of a type as a job file writes it; ValueError if it is none."""
    value = written.strip().lower()
    parts = decimal_parts(value)
    if parts:
        precision, scale = parts
        if not 1 <= precision <= DECIMAL_MAX_PRECISION or scale > precision:
            raise ValueError(f"decimal(p,s) needs 1 <= p <= {DECIMAL_MAX_PRECISION} and s <= p")
        return decimal_name(precision, scale)
    if value not in NAMES:
        raise ValueError(f"expected one of {', '.join(NAMES)}, decimal(p,s)")
    return value


def decimal_parts(type_name: str) -> tuple[int, int] | None:
    """(precision, scale) of a decimal type name; None for any other name."""
    match = _DECIMAL.match(type_name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def decimal_name(precision: int, scale: int) -> str:
    return f"decimal({precision},{scale})"


def arrow_type(type_name: str) -> pa.DataType:
    import pyarrow as pa

    parts = decimal_parts(type_name)
    return pa.decimal128(*parts) if parts else _arrow_types()[type_name]


def duckdb_type(type_name: str) -> str:
    parts = decimal_parts(type_name)
    return f"DECIMAL({parts[0]},{parts[1]})" if parts else _DUCKDB[type_name]


def name_of_arrow(arrow: pa.DataType) -> str:
    """The batchrun type that holds an Arrow type's values (what schema inference writes);
    any other Arrow type is read as string."""
    import pyarrow as pa

    if pa.types.is_decimal(arrow):
        return decimal_name(arrow.precision, arrow.scale)
    checks = [(pa.types.is_boolean, "bool"), (pa.types.is_int32, "int32"),
              (pa.types.is_integer, "int64"), (pa.types.is_floating, "float64"),
              (pa.types.is_date, "date"), (pa.types.is_timestamp, "timestamp")]
    return next((name for check, name in checks if check(arrow)), "string")


@cache
def _arrow_types() -> dict[str, pa.DataType]:
    import pyarrow as pa

    return {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64(),
            "float64": pa.float64(), "bool": pa.bool_(), "date": pa.date32(),
            "timestamp": pa.timestamp("us")}
