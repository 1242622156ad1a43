"""The job's table: for every source path, the rows of its latest committed version across
all of the job's runs (`Catalog.served_files` decides which run's version is served).

A batch's Parquet output holds the rows of several source files, and a later run may
ingest some of them again, so the table reads, run by run:

- the output of every batch that serves at least one path. A batch none of whose files a
  later version supersedes is read whole; the others through an anti-join on (run,
  batch, file) with the superseded files: only the rows of the files they serve. A batch
  whose files are all superseded is not read at all;
- minus the run's unique-key rejects (`runs.unique_path`), anti-joined on (file, line)
  run by run: a run's unique file names rows of that run only.

The rejects view holds the rejects of the served versions the same way. The superseded
files and the serving batches are two small tables stored beside the views
(`__batchrun_superseded`, `__batchrun_serving`): they grow with re-ingested files and
batches, never with rows. `batchrun query` (without `--run`) and the published
`staging.duckdb` are both built here from the catalog, so they cannot disagree.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from batchrun import objectstore
from batchrun.catalog import Catalog
from batchrun.errors import CommittedOutputError, EnvironmentProblem
from batchrun.layout import BATCH, FILE, LINE
from batchrun.model import Committed, RunRecord
from batchrun.staging import (
    _confine,
    check_committed_files,
    create_table_views,
    named_output_error,
    object_dataset,
    publish_staging_db,
    quote_literal,
    rejects_view_sql,
    sql_paths,
    table_view_sql,
    unreadable_output,
)

SUPERSEDED, SERVING = "__batchrun_superseded", "__batchrun_serving"


@dataclass(frozen=True)
class RunSlice:
    """What one run contributes to its job's table."""

    run_id: str
    whole: list[str]
    """Outputs read whole: every file of their batch is served."""
    filtered: list[str]
    """Outputs read without the rows of their superseded files."""
    rejects_whole: list[str]
    rejects_filtered: list[str]
    unique: str | None
    committed: Committed = field(repr=False)
    """Every file above with its recorded size and the run's storage: checks and errors."""

    def sources(self) -> dict[str, list[str]]:
        """kind → paths, for every kind this slice reads."""
        found = {"whole": self.whole, "filtered": self.filtered,
                 "rejects_whole": self.rejects_whole, "rejects_filtered": self.rejects_filtered,
                 "unique": [self.unique] if self.unique else []}
        return {kind: paths for kind, paths in found.items() if paths}


@dataclass(frozen=True)
class JobTable:
    job: str
    table: str
    columns: dict[str, str]
    slices: tuple[RunSlice, ...]
    superseded: tuple[tuple[str, str, str], ...]
    serving: tuple[tuple[str, str], ...]

    @property
    def paths(self) -> set[str]:
        return set().union(*(s.committed.paths for s in self.slices))

    @property
    def on_object_storage(self) -> bool:
        return any(objectstore.is_object(p) for p in self.paths)


def job_table(catalog: Catalog, record: RunRecord,
              columns: dict[str, str] | None = None) -> JobTable:
    """The table of `record`'s job (its name, and columns unless given, from `record`)."""
    rows = catalog.serving_batches(record.job)
    slices = tuple(_slice(run_id, list(group))
                   for run_id, group in groupby(rows, key=lambda r: r["run_id"]))
    return JobTable(record.job, record.table, columns or record.schema or {}, slices,
                    tuple(catalog.superseded_files(record.job)),
                    tuple((r["run_id"], r["batch_id"]) for r in rows))


def _slice(run_id: str, rows: list[dict[str, Any]]) -> RunSlice:
    def paths(kind: str, superseded: bool) -> list[str]:
        return [r[f"{kind}_path"] for r in rows if r[f"{kind}_path"] and bool(r["superseded"]) == superseded]

    unique = rows[0]["unique_path"]
    sizes = {r[f"{kind}_path"]: r[f"{kind}_size"] for r in rows for kind in ("output", "rejects")
             if r[f"{kind}_path"] and r[f"{kind}_size"] is not None}
    if unique and rows[0]["unique_size"] is not None:
        sizes[unique] = rows[0]["unique_size"]
    rejects = paths("rejects", False) + paths("rejects", True)
    committed = Committed(paths("output", False) + paths("output", True),
                          rejects + ([unique] if unique else []), unique, sizes, run_id,
                          json.loads(rows[0]["config_json"]).get("storage"))
    return RunSlice(run_id, paths("output", False), paths("output", True),
                    paths("rejects", False), paths("rejects", True), unique, committed)


def _name(index: int, kind: str) -> str:
    return f"__batchrun_{index}_{kind}"


def _source(table: JobTable, index: int, kind: str, registered: bool) -> str:
    if registered:
        return _name(index, kind)
    paths = table.slices[index].sources()[kind]
    return f"read_parquet({sql_paths(paths)}, union_by_name = true)"


def attach(db: duckdb.DuckDBPyConnection, table: JobTable) -> bool:
    """Check the table's files, register them (object storage) and store the two lookup
    tables in `db`; whether the files were registered (views must then be TEMP)."""
    for part in table.slices:
        check_committed_files(part.committed)
    registered = table.on_object_storage
    if registered:
        _register(db, table)
    temp = "TEMP " if registered else ""
    for name, names, rows in ((SUPERSEDED, ("run_id", "batch_id", "path"), table.superseded),
                              (SERVING, ("run_id", "batch_id"), table.serving)):
        arrow = pa.table({n: pa.array([r[i] for r in rows], pa.string())
                          for i, n in enumerate(names)})
        db.register("__batchrun_rows", arrow)
        db.execute(f"CREATE OR REPLACE {temp}TABLE {name} AS SELECT * FROM __batchrun_rows")
        db.unregister("__batchrun_rows")
    return registered


def _register(db: duckdb.DuckDBPyConnection, table: JobTable) -> None:
    for index, part in enumerate(table.slices):
        system = objectstore.filesystem(objectstore.Settings.of(part.committed.storage))
        for kind, paths in part.sources().items():
            try:
                db.register(_name(index, kind), object_dataset(paths, system))
            except OSError as exc:
                raise unreadable_output(part.committed, exc) from None


def rows_sql(table: JobTable, registered: bool, include: Callable[[str], bool] = lambda _: True,
             hide_unique: bool = True) -> str | None:
    """The table's rows from the slices whose run id `include` accepts (None: no file),
    unordered; without `hide_unique` a run's unique-key rejects stay in."""
    branches = []
    for index, part in enumerate(table.slices):
        if not include(part.run_id):
            continue
        for kind in ("whole", "filtered"):
            if kind not in part.sources():
                continue
            sql = f"SELECT t.* FROM {_source(table, index, kind, registered)} AS t"
            if kind == "filtered":
                sql += _hide_superseded("t", part.run_id, BATCH, FILE)
            if hide_unique and part.unique:
                sql += (f" ANTI JOIN {_source(table, index, 'unique', registered)} AS u"
                        f" ON t.{FILE} = u.file AND t.{LINE} = u.line")
            branches.append(sql)
    return _union(branches)


def _hide_superseded(alias: str, run_id: str, batch: str, file: str) -> str:
    return (f" ANTI JOIN {SUPERSEDED} AS s ON s.run_id = {quote_literal(run_id)}"
            f" AND {alias}.{batch} = s.batch_id AND {alias}.{file} = s.path")


def _union(branches: list[str]) -> str | None:
    if not branches:
        return None
    return " UNION ALL BY NAME ".join(f"({branch})" for branch in branches)


def rejects_sql(table: JobTable, registered: bool) -> str | None:
    """The rejects of the served versions (None: no file). A run's unique-key rejects are
    kept for its serving batches only, less the superseded files."""
    branches = []
    for index, part in enumerate(table.slices):
        for kind in ("rejects_whole", "rejects_filtered", "unique"):
            if kind not in part.sources():
                continue
            sql = f"SELECT r.* FROM {_source(table, index, kind, registered)} AS r"
            if kind == "unique":
                sql += (f" SEMI JOIN {SERVING} AS b ON b.run_id = {quote_literal(part.run_id)}"
                        " AND r.batch_id = b.batch_id")
            if kind != "rejects_whole":
                sql += _hide_superseded("r", part.run_id, "batch_id", "file")
            branches.append(sql)
    return _union(branches)


def create_job_views(db: duckdb.DuckDBPyConnection, table: JobTable) -> None:
    """The `<table>` and `<table>__rejects` views of the job's table in `db`."""
    registered = attach(db, table)
    rows, rejects = rows_sql(table, registered), rejects_sql(table, registered)
    table_sql = (f"SELECT * FROM ({rows}) ORDER BY {FILE}, {LINE}" if rows
                 else table_view_sql(table.columns, []))
    rejects_view = (f"SELECT * FROM ({rejects}) ORDER BY file, line" if rejects
                    else rejects_view_sql([]))
    try:
        create_table_views(db, table.table, table_sql, rejects_view, registered)
    except duckdb.Error as exc:
        raise unreadable_table(table, exc) from None


def job_query_connection(table: JobTable, unsafe: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the job table's views, confined as `query_connection`."""
    db = duckdb.connect()
    create_job_views(db, table)
    if not unsafe:
        _confine(db, sorted(table.paths))
    return db


def named_table_error(table: JobTable, exc: Exception) -> CommittedOutputError | None:
    """The committed file of the job's table a DuckDB error names, if it names one."""
    return next((found for part in table.slices
                 if (found := named_output_error(part.committed, exc)) is not None), None)


def unreadable_table(table: JobTable, exc: Exception) -> EnvironmentProblem:
    """As `staging.unreadable_output`, over every run the job's table reads."""
    problems = [unreadable_output(part.committed, exc) for part in table.slices]
    damaged = [p for p in problems if isinstance(p, CommittedOutputError)]
    if damaged or problems:
        return (damaged or problems)[0]
    return EnvironmentProblem(f"cannot read the table of job {table.job}: {exc}")


def publish_job_table(staging_dir: str, table: JobTable) -> Path | None:
    """`staging.duckdb` as the job's table (object storage: the files are checked, and
    nothing is published; see staging.py)."""
    if objectstore.is_object(staging_dir):
        for part in table.slices:
            check_committed_files(part.committed)
        return None
    return publish_staging_db(staging_dir, lambda db: create_job_views(db, table))
