"""Unique keys across a whole run, decided in deterministic (file, line) order.

Batches finish in any order, so "the first occurrence" can only be decided once every
batch has committed. When a run (or a resume) finishes, the driver recomputes, over all
committed output, every row whose unique key was already seen earlier in (file, line)
order, and writes those rows as rejects (rule `unique`) into one Parquet file recorded on
the run. The table view anti-joins that file, so committed batch files stay immutable and
the result is the same whatever the worker count, batch size or completion order.
"""

from __future__ import annotations

import uuid

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from loguru import logger

from batchrun import objectstore
from batchrun.catalog import Catalog
from batchrun.config import ColumnSpec, CsvOptions
from batchrun.errors import SourceError
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
from batchrun.staging import (
    OUTPUTS,
    delete_output,
    object_dataset,
    quote_identifier,
    quote_literal,
    sql_paths,
)


def apply_unique_keys(catalog: Catalog, record: RunRecord, columns: dict[str, ColumnSpec]) -> int:
    """Recompute the run's unique-key rejects; return how many rows they hide."""
    keys = [name for name, spec in columns.items() if spec.unique]
    storage = record.config.get("storage")
    objectstore.configure(storage)  # the raw lines of s3:// sources
    committed = catalog.committed(record.run_id)
    previous, outputs = committed.unique, committed.outputs
    if not keys or not outputs:
        if previous:
            catalog.record_unique(record.run_id, None, {})
        return 0
    duplicates = _duplicates(outputs, keys, record.run_id, storage)
    written = _write(duplicates, record) if duplicates.num_rows else None
    catalog.record_unique(record.run_id, written, _per_file(duplicates))
    if previous and previous != (written and written.path):
        delete_output(previous, storage)
    logger.bind(run_id=record.run_id).info("unique keys {}: {} later duplicate(s) rejected",
                                           keys, duplicates.num_rows)
    return duplicates.num_rows


def _duplicates(outputs: list[str], keys: list[str], run_id: str,
                storage: dict[str, object] | None = None) -> pa.Table:
    """One reject per duplicate row, for the first unique column (schema order) it repeats."""
    objects = any(objectstore.is_object(p) for p in outputs)
    source = OUTPUTS if objects else f"read_parquet({sql_paths(outputs)})"
    branches = []
    for order, key in enumerate(keys):
        column = quote_identifier(key)
        branches.append(
            f"SELECT {order} AS k, {FILE}, {LINE}, {BATCH}, {quote_literal(key)} AS col,"
            f" CAST({column} AS VARCHAR) AS value FROM (SELECT {FILE}, {LINE}, {BATCH}, {column},"
            f" row_number() OVER (PARTITION BY {column} ORDER BY {FILE}, {LINE}) AS seen"
            f" FROM {source} WHERE {column} IS NOT NULL) WHERE seen > 1")
    sql = (f"SELECT {quote_literal(run_id)} AS run_id, {BATCH} AS batch_id, {FILE} AS file, {LINE} AS line,"
           f" col AS \"column\", 'unique' AS rule, value FROM ("
           f"SELECT *, row_number() OVER (PARTITION BY {FILE}, {LINE} ORDER BY k) AS first"
           f" FROM ({' UNION ALL '.join(branches)})) WHERE first = 1 ORDER BY file, line")
    with duckdb.connect() as db:
        if objects:
            system = objectstore.filesystem(objectstore.Settings.of(storage))
            db.register(OUTPUTS, object_dataset(outputs, system))
        return db.sql(sql).to_arrow_table()


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
