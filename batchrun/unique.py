"""Unique keys across the job's table, decided in deterministic order.

Batches finish in any order, so "the first occurrence" can only be decided once every
batch has committed. When a run (or a resume) finishes, the driver recomputes which of
the run's rows (those the job's table serves from it, see jobtable.py) are duplicates:

- a row whose key the job's table already serves from another run (an earlier night's
  version of a file this run did not ingest again) is a duplicate: the table never
  retroactively rejects a row it served;
- among the run's own rows, the first occurrence in (file, line) order wins, later ones
  are duplicates (a run-wide pass, as when each run was its own table).

Those rows are written as rejects (rule `unique`) into one Parquet file recorded on the
run. The table view anti-joins that file, so committed batch files stay immutable and
the result is the same whatever the worker count, batch size, completion order, kills
and resumes. Another run's rows count as served only as that run's table rows (less its
own unique rejects), so two runs never reject the same key from each other.

That pass need not look at every row: while batches run, keyfeed.py indexes every key
and proposes candidates (a key seen twice, or served by another run; a superset of the
duplicates' keys). The same SQL then runs over the rows whose key is a candidate, read
from the files that hold one: with no candidate, nothing is read. A row's fate depends
only on the rows sharing its key, so the result is the run-wide pass's, row for row.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from loguru import logger

from batchrun import objectstore
from batchrun.catalog import Catalog
from batchrun.config import ColumnSpec, CsvOptions
from batchrun.errors import SourceError
from batchrun.jobtable import JobTable, attach, job_table, rows_sql
from batchrun.keyfeed import Candidates, KeyFeed
from batchrun.keyindex import is_hashed
from batchrun.layout import (
    BATCH,
    FILE,
    LINE,
    REJECT_SCHEMA,
    UNIQUE_PARTITION,
    partition_dir,
    rejects_table_name,
    storage_for,
    write_parquet_atomically,
)
from batchrun.model import RunRecord, WrittenFile
from batchrun.readers.source import read_file
from batchrun.staging import delete_output, quote_identifier, quote_literal


def apply_unique_keys(catalog: Catalog, record: RunRecord, columns: dict[str, ColumnSpec],
                      rebuilds: bool = False, feed: KeyFeed | None = None) -> int:
    """Recompute the run's unique-key rejects; return how many rows they hide. `rebuilds`:
    the run is a full refresh about to succeed, so the table will serve only it and the
    runs after it: the runs before it take no key from it. `feed`: the run's key index
    (None: every row is checked)."""
    started = time.perf_counter()
    keys = [name for name, spec in columns.items() if spec.unique]
    storage = record.config.get("storage")
    objectstore.configure(storage)  # the raw lines of s3:// sources
    previous = catalog.committed(record.run_id).unique
    table = job_table(catalog, record)
    if not keys or all(part.run_id != record.run_id for part in table.slices):
        if previous:
            catalog.record_unique(record.run_id, None, {})
        return 0
    candidates = feed.finish(table, rebuilds) if feed else None
    duplicates = _duplicates(table, keys, record.run_id, rebuilds, candidates)
    written = _write(duplicates, record) if duplicates.num_rows else None
    catalog.record_unique(record.run_id, written, _per_file(duplicates))
    if previous and previous != (written and written.path):
        delete_output(previous, storage)
    logger.bind(run_id=record.run_id).info(
        "unique keys {}: {} later duplicate(s) rejected in {:.2f}s ({})", keys,
        duplicates.num_rows, time.perf_counter() - started, _checked(candidates))
    return duplicates.num_rows


def _checked(candidates: Candidates | None) -> str:
    if candidates is None:
        return "every row checked"
    return (f"index: {candidates.indexed:,} keys, {candidates.count} candidate(s)"
            f" in {len(candidates.files)} file(s)")


def _duplicates(table: JobTable, keys: list[str], run_id: str, rebuilds: bool,
                candidates: Candidates | None = None) -> pa.Table:
    """One reject per duplicate row of the run, for the first unique column (schema order)
    it repeats: a key the job's table already serves from another run, or one an earlier
    row of the run (file, line order) holds. With `candidates`, only the rows whose key
    is one, from the files holding one, are read."""
    wanted = [(order, key) for order, key in enumerate(keys)
              if candidates is None or candidates.codes[key].size]
    if not wanted:
        return pa.table({})
    if candidates is not None:
        table = _holding(table, candidates.files)
    with duckdb.connect() as db:
        registered = attach(db, table)
        mine = rows_sql(table, registered, lambda run: run == run_id, hide_unique=False)
        if mine is None:
            return pa.table({})
        order = [part.run_id for part in table.slices]
        earlier = set(order[:order.index(run_id)]) if rebuilds else set()
        others = rows_sql(table, registered, lambda run: run != run_id and run not in earlier)
        ctes = f"WITH mine AS ({mine})" + (f", others AS ({others})" if others else "")
        branches = [_repeats(order, key, others is not None, _among(db, order, key, candidates))
                    for order, key in wanted]
        sql = (f"{ctes} SELECT {quote_literal(run_id)} AS run_id, {BATCH} AS batch_id,"
               f" {FILE} AS file, {LINE} AS line, col AS \"column\", 'unique' AS rule, value"
               f" FROM (SELECT *, row_number() OVER (PARTITION BY {FILE}, {LINE} ORDER BY k)"
               f" AS first FROM ({' UNION ALL '.join(branches)})) WHERE first = 1"
               " ORDER BY file, line")
        return db.sql(sql).to_arrow_table()


def _holding(table: JobTable, files: set[str]) -> JobTable:
    """The table read from `files` only (the checks and the lookup tables stay whole)."""
    return replace(table, slices=tuple(
        replace(part, whole=[p for p in part.whole if p in files],
                filtered=[p for p in part.filtered if p in files]) for part in table.slices))


def _among(db: duckdb.DuckDBPyConnection, order: int, key: str,
           candidates: Candidates | None) -> str:
    """The condition that a row's `key` is a candidate (the candidates stored in `db`)."""
    if candidates is None:
        return "true"
    name = f"__batchrun_candidates_{order}"
    arrow = candidates.types[key]
    codes = candidates.codes[key]
    signed = not is_hashed(arrow) and pa.types.is_signed_integer(arrow)
    db.register(name, pa.table({"c": codes.view(np.int64) if signed else codes}))
    column = quote_identifier(key)
    return f"{f'hash({column})' if is_hashed(arrow) else column} IN (SELECT c FROM {name})"


def _repeats(order: int, key: str, others: bool, among: str = "true") -> str:
    """The run's rows whose `key` is served by another run, or repeats an earlier row's
    (of the rows whose key passes `among`: all rows sharing a key pass it, or none)."""
    column = quote_identifier(key)
    taken = (f"{column} IN (SELECT {column} FROM others WHERE {column} IS NOT NULL)"
             if others else "false")
    return (f"SELECT {order} AS k, {FILE}, {LINE}, {BATCH}, {quote_literal(key)} AS col,"
            f" CAST({column} AS VARCHAR) AS value FROM (SELECT {FILE}, {LINE}, {BATCH}, {column},"
            f" row_number() OVER (PARTITION BY {column} ORDER BY {FILE}, {LINE}) AS seen,"
            f" {taken} AS taken FROM mine WHERE {column} IS NOT NULL AND {among})"
            " WHERE seen > 1 OR taken")


def _with_raw_lines(duplicates: pa.Table, record: RunRecord) -> pa.Table:
    fmt = record.config["source"]["format"]
    options = CsvOptions(**record.config["source"].get("csv", {}))
    lines: list[str] = []
    for path in pc.unique(duplicates["file"]).to_pylist():
        mine = duplicates.filter(pc.equal(duplicates["file"], path))
        try:
            raw = read_file(path, fmt, options)
            lines += raw.raw_lines(mine["line"].to_pylist())
        except SourceError:
            lines += [""] * mine.num_rows
    return duplicates.append_column("raw_line", pa.array(lines, pa.string()))


def _write(duplicates: pa.Table, record: RunRecord) -> WrittenFile:
    table = _with_raw_lines(duplicates, record).select(REJECT_SCHEMA.names).cast(REJECT_SCHEMA)
    name = f"{record.run_id}-unique-{uuid.uuid4().hex[:8]}.parquet"
    if objectstore.is_object(record.staging_dir):
        storage = storage_for(record.staging_dir,
                              objectstore.Settings.of(record.config.get("storage")))
        folder = objectstore.join(record.staging_dir, rejects_table_name(record.table))
        return storage.write_parquet(table, objectstore.join(folder, f"{UNIQUE_PARTITION}/{name}"))
    directory = partition_dir(record.staging_dir, rejects_table_name(record.table), 0).parent
    directory = directory / UNIQUE_PARTITION
    directory.mkdir(parents=True, exist_ok=True)
    return write_parquet_atomically(table, directory / name)


def _per_file(duplicates: pa.Table) -> dict[str, int]:
    if duplicates.num_rows == 0:
        return {}
    counted = pc.value_counts(duplicates["file"])
    return dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist()))
