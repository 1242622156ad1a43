"""Vectorised validation: raw string cells → typed good rows + one reject per bad row.

All the work is one DuckDB query over the batch's Arrow table (zero-copy), built from
the job's column rules. A row is rejected for the first rule it breaks, taking columns
in schema order and, within a column, the rules in the order `checks_for` lists them:
required, type, min, max, allowed, pattern, max_length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from batchrun.coltypes import decimal_parts, duckdb_type
from batchrun.config import ColumnSpec
from batchrun.layout import FILE, LINE


@dataclass(frozen=True)
class Check:
    column: str
    rule: str
    sql: str
    """A boolean SQL expression that is true when the row breaks the rule."""


@dataclass(frozen=True)
class Validated:
    good: pa.Table
    """Typed schema columns plus `_file` and `_line`."""
    rejects: pa.Table
    """`file`, `line`, `column`, `rule`, `value` for every rejected row."""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def _cleaned(name: str, spec: ColumnSpec) -> str:
    """The raw cell with an empty value turned into NULL (and trimmed unless a string)."""
    if spec.type == "string":
        return f"NULLIF({_quote(name)}, '')"
    return f"NULLIF(trim({_quote(name)}), '')"


def _typed(value: str, spec: ColumnSpec) -> str:
    kind = spec.type
    if kind == "string":
        return value
    if kind in ("int32", "int64"):
        return (f"CASE WHEN regexp_full_match({value}, '[+-]?[0-9]+') "
                f"THEN TRY_CAST({value} AS {duckdb_type(kind)}) END")
    parts = decimal_parts(kind)
    if parts:
        scale = parts[1]
        number = "[+-]?[0-9]+" if scale == 0 else (
            f"[+-]?([0-9]+(\\.[0-9]{{0,{scale}}})?|\\.[0-9]{{1,{scale}}})")
        return (f"CASE WHEN regexp_full_match({value}, '{number}') "
                f"THEN TRY_CAST({value} AS {duckdb_type(kind)}) END")
    if kind in ("date", "timestamp") and spec.format:
        parsed = f"TRY_STRPTIME({value}, {_literal(spec.format)})"
        return f"TRY_CAST({parsed} AS DATE)" if kind == "date" else parsed
    if kind == "timestamp":  # an offset is applied (stored as UTC), never silently dropped
        return f"timezone('UTC', TRY_CAST({value} AS TIMESTAMPTZ))"
    return f"TRY_CAST({value} AS {duckdb_type(kind)})"


def _bound(value: Any, spec: ColumnSpec) -> str:
    if spec.type in ("date", "timestamp") or isinstance(value, str):
        return f"CAST({_literal(value)} AS {duckdb_type(spec.type)})"
    return _literal(value)


def checks_for(name: str, spec: ColumnSpec, value: str, typed: str,
               check_type: bool = True) -> list[Check]:
    """The rules of one column as SQL conditions that mean 'broken', in the order that
    decides which rule a row breaks first."""
    checks = []
    if spec.required:
        checks.append(Check(name, "required", f"{value} IS NULL"))
    if spec.type != "string" and check_type:
        checks.append(Check(name, f"type:{spec.type}", f"{value} IS NOT NULL AND {typed} IS NULL"))
    if spec.min is not None:
        checks.append(Check(name, "min", f"{typed} < {_bound(spec.min, spec)}"))
    if spec.max is not None:
        checks.append(Check(name, "max", f"{typed} > {_bound(spec.max, spec)}"))
    if spec.allowed is not None:
        options = ", ".join(_bound(v, spec) if spec.type != "string" else _literal(str(v))
                            for v in spec.allowed)
        checks.append(Check(name, "allowed", f"{typed} NOT IN ({options})"))
    if spec.pattern is not None:
        checks.append(Check(name, "pattern",
                            f"NOT regexp_full_match({value}, {_literal(spec.pattern)})"))
    if spec.max_length is not None:
        checks.append(Check(name, "max_length", f"length({value}) > {spec.max_length}"))
    return checks


def pattern_problem(pattern: str) -> str | None:
    """Why DuckDB (RE2) cannot use this regular expression, or None if it can."""
    try:
        duckdb.connect().execute("SELECT regexp_full_match('', ?)", [pattern]).fetchall()
    except duckdb.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


class Validator:
    """Compiles the column rules once; validates any number of batches."""

    def __init__(self, columns: dict[str, ColumnSpec], threads: int = 1,
                 typed_inputs: frozenset[str] = frozenset()) -> None:
        """`typed_inputs` names columns that arrive already typed (the fast path): they
        skip cleaning and the type check; every other column arrives as raw strings."""
        self.columns = columns
        self.checks: list[Check] = []
        cleaned, typed = [], []
        # Helper columns are named _v<i>/_t<i>: schema names cannot start with "_".
        for index, (name, spec) in enumerate(columns.items()):
            value = f"_v{index}"
            is_typed = name in typed_inputs
            cleaned.append(f"{_quote(name) if is_typed else _cleaned(name, spec)} AS {value}")
            typed.append(f"{value if is_typed else _typed(value, spec)} AS _t{index}")
            self.checks.extend(checks_for(name, spec, value, f"_t{index}", not is_typed))
        self._sql = self._compile(cleaned, typed)
        self._db = duckdb.connect(config={"threads": threads})
        self._db.execute("SET TimeZone = 'UTC'")  # naive timestamps are read as UTC

    def _compile(self, cleaned: list[str], typed: list[str]) -> str:
        names = list(self.columns)
        retyped = ", ".join(typed)
        codes = " ".join(f"WHEN {c.sql} THEN {i}" for i, c in enumerate(self.checks))
        reject = f"CASE {codes} END" if self.checks else "NULL::INTEGER"
        values = " ".join(f"WHEN {i} THEN CAST({_quote(c.column)} AS VARCHAR)"
                          for i, c in enumerate(self.checks))
        value = f"CASE _reject {values} END" if self.checks else "NULL::VARCHAR"
        outputs = ", ".join(f"_t{i} AS {_quote(n)}" for i, n in enumerate(names))
        raw_columns = ", ".join(_quote(n) for n in names)
        return (
            f"WITH cleaned AS (SELECT {raw_columns}, {FILE}, {LINE}, {', '.join(cleaned)} FROM raw),"
            f" typed AS (SELECT *, {retyped} FROM cleaned),"
            f" checked AS (SELECT *, {reject} AS _reject FROM typed)"
            f" SELECT {outputs}, {FILE}, {LINE}, _reject, {value} AS _value FROM checked"
        )

    def validate(self, raw: pa.Table) -> Validated:
        self._db.register("raw", raw)
        try:
            result = self._db.sql(self._sql).to_arrow_table()
        finally:
            self._db.unregister("raw")
        bad = pc.is_valid(result["_reject"])
        good = result.filter(pc.invert(bad)).drop_columns(["_reject", "_value"])
        return Validated(good=good, rejects=self._reject_table(result.filter(bad)))

    def _reject_table(self, bad: pa.Table) -> pa.Table:
        codes = bad["_reject"].combine_chunks() if bad.num_rows else pa.array([], pa.int32())
        columns = pa.array([c.column for c in self.checks] or [""], pa.string())
        rules = pa.array([c.rule for c in self.checks] or [""], pa.string())
        return pa.table({
            "file": bad[FILE], "line": bad[LINE],
            "column": pc.take(columns, codes), "rule": pc.take(rules, codes),
            "value": bad["_value"],
        })
