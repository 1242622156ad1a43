"""batchrun column types and their Arrow and DuckDB spellings."""

from __future__ import annotations

import re

import pyarrow as pa

_DECIMAL = re.compile(r"^decimal\((\d+),(\d+)\)$")
_ARROW = {
    "string": pa.string(), "int32": pa.int32(), "int64": pa.int64(),
    "float64": pa.float64(), "bool": pa.bool_(), "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
}
_DUCKDB = {
    "string": "VARCHAR", "int32": "INTEGER", "int64": "BIGINT", "float64": "DOUBLE",
    "bool": "BOOLEAN", "date": "DATE", "timestamp": "TIMESTAMP",
}


def decimal_parts(type_name: str) -> tuple[int, int] | None:
    match = _DECIMAL.match(type_name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def arrow_type(type_name: str) -> pa.DataType:
    parts = decimal_parts(type_name)
    return pa.decimal128(*parts) if parts else _ARROW[type_name]


def duckdb_type(type_name: str) -> str:
    parts = decimal_parts(type_name)
    return f"DECIMAL({parts[0]},{parts[1]})" if parts else _DUCKDB[type_name]

