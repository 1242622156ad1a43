"""A run's rejected rows, read through its `<table>__rejects` view: the top reasons (for
`report`), counts by file and rule and the rows themselves (for `batchrun rejects`).

Rows are read in chunks from one DuckDB cursor, so `rejects --format csv` of a run with
tens of thousands of rejects never holds them all. A query that fails on our own SQL can
only mean a damaged committed file: it is raised as the error naming that file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import duckdb

from batchrun.catalog import Catalog
from batchrun.model import Committed, RunRecord
from batchrun.staging import query_connection, quote_identifier, unreadable_output

COLUMNS = ("run_id", "batch_id", "file", "line", "column", "rule", "value", "raw_line")
"""A reject row's fields, in the order `rejects` prints them."""
CHUNK = 5_000


@dataclass(frozen=True)
class RejectExample:
    file: str
    line: int | None
    value: str | None
    raw_line: str | None


@dataclass(frozen=True)
class RejectReason:
    """One rule broken on one column (column None: the row as a whole, e.g. ragged_row)."""

    rule: str
    column: str | None
    count: int
    examples: tuple[RejectExample, ...]

    def as_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "column": self.column, "count": self.count,
                "examples": [asdict(e) for e in self.examples]}


@dataclass(frozen=True)
class FileRuleCount:
    file: str
    rule: str
    count: int


@dataclass(frozen=True)
class RejectFilter:
    """What `batchrun rejects --file/--rule` narrows to."""

    file_contains: str | None = None
    rule: str | None = None

    def where(self) -> tuple[str, list[str]]:
        conditions, params = ["true"], []
        if self.file_contains:
            conditions.append("contains(file, ?)")
            params.append(self.file_contains)
        if self.rule:
            conditions.append("rule = ?")
            params.append(self.rule)
        return " AND ".join(conditions), params


class RunRejects:
    """The rejects view of one run, opened once. `explain` turns a DuckDB error into the
    error to raise (default: the damaged committed file it comes from)."""

    def __init__(self, catalog: Catalog, run_id: str,
                 explain: Callable[[Exception], Exception] | None = None) -> None:
        record: RunRecord = catalog.run(run_id)
        self.committed: Committed = catalog.committed(run_id)
        self.view = quote_identifier(record.table + "__rejects")
        self.explain = explain or (lambda exc: unreadable_output(self.committed, exc))
        self.db = query_connection(record.table, record.schema or {}, self.committed)

    def _execute(self, sql: str, params: list[Any] | None = None) -> duckdb.DuckDBPyConnection:
        try:
            return self.db.execute(sql, params or [])
        except duckdb.Error as exc:  # our own SQL: only a damaged committed file fails it
            raise self.explain(exc) from None

    def reasons(self, top: int = 10, examples: int = 2) -> list[RejectReason]:
        """The `top` most frequent (rule, column) pairs, each with its first `examples`
        rows in file and line order."""
        counted = self._execute(
            f'SELECT rule, "column", count(*) n FROM {self.view} GROUP BY ALL'
            f' ORDER BY n DESC, rule, "column" NULLS FIRST LIMIT {int(top)}').fetchall()
        shown = self._execute(
            f'SELECT rule, "column", file, line, value, raw_line FROM (SELECT *, row_number()'
            f' OVER (PARTITION BY rule, "column" ORDER BY file, line) k FROM {self.view})'
            f' WHERE k <= {int(examples)} ORDER BY file, line').fetchall()
        found: dict[tuple[str, str | None], list[RejectExample]] = {}
        for rule, column, file, line, value, raw in shown:
            found.setdefault((rule, column), []).append(RejectExample(file, line, value, raw))
        return [RejectReason(rule, column, n, tuple(found.get((rule, column), ())))
                for rule, column, n in counted]

    def total(self, narrow: RejectFilter = RejectFilter()) -> int:
        where, params = narrow.where()
        found = self._execute(f"SELECT count(*) FROM {self.view} WHERE {where}", params).fetchone()
        return int(found[0]) if found else 0

    def by_file_and_rule(self, narrow: RejectFilter = RejectFilter()) -> list[FileRuleCount]:
        where, params = narrow.where()
        rows = self._execute(f"SELECT file, rule, count(*) FROM {self.view} WHERE {where}"
                             f" GROUP BY ALL ORDER BY file, rule", params).fetchall()
        return [FileRuleCount(file, rule, n) for file, rule, n in rows]

    def rows(self, narrow: RejectFilter = RejectFilter(),
             limit: int | None = None) -> Iterator[tuple[Any, ...]]:
        """Every matching reject row (COLUMNS), in file and line order, chunk by chunk."""
        where, params = narrow.where()
        listed = ", ".join(quote_identifier(c) for c in COLUMNS)
        cursor = self._execute(f"SELECT {listed} FROM {self.view} WHERE {where}"
                               f" ORDER BY file, line" + (f" LIMIT {int(limit)}" if limit else ""),
                               params)
        while chunk := self._fetch(cursor):
            yield from chunk

    def _fetch(self, cursor: duckdb.DuckDBPyConnection) -> list[Any]:
        try:
            return cursor.fetchmany(CHUNK)
        except duckdb.Error as exc:
            raise self.explain(exc) from None
