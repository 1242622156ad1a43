"""The batch pipeline: read a batch's files, validate, quarantine, transform, write Parquet
into its own partition. No Ray here: `execution/pool.py` runs it in actors.

A worker owns `staging/<table>/part-<k>/` (and the same partition of the rejects store)
and nothing else: it never touches the catalog. Each output is written to a hidden
temporary name and renamed into place; the driver's commit record is what makes it
visible. A file that cannot be read is quarantined (recorded with its reason) and the
rest of the batch still commits.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from loguru import logger

from batchrun import objectstore
from batchrun.config import ColumnSpec, CsvOptions, ValidationSection
from batchrun.errors import PermanentSourceError, SourceError
from batchrun.fastcheck import CleanCheck
from batchrun.hooks import NO_HOOKS, Hooks
from batchrun.identity import change_since_planning, check_not_changed_while_read, content_checksum
from batchrun.layout import BATCH, FILE, LINE, REJECT_SCHEMA, output_name, rejects_table_name, storage_for
from batchrun.model import BatchResult, BatchTask, FileOutcome, WrittenFile
from batchrun.readers.custom import last_line, resolve
from batchrun.readers.fastcsv import fast_typed_columns, read_csv_fast_batch
from batchrun.readers.raw import RawFile, table_as_raw
from batchrun.readers.source import read_file
from batchrun.validate import Validated, Validator


@dataclass(frozen=True)
class PipelineSpec:
    """Everything a worker needs, shipped once when the actor starts."""

    run_id: str
    table: str
    staging_dir: str
    fmt: str
    csv: CsvOptions
    columns: dict[str, ColumnSpec]
    validation: ValidationSection = ValidationSection()
    max_file_bytes: int | None = None
    """Decompressed bytes past which a file is quarantined (`[source] max_file_bytes`)."""
    threads: int = 1
    reader: str | None = None
    """Custom reader "module:function" (path → pyarrow Table), or None for the built-ins."""
    transform: str | None = None
    """Custom transform "module:function" (Table → Table) for each file's good rows."""
    code_dirs: tuple[str, ...] = ()
    """Folders put on the import path for custom steps (the job file's folder)."""
    hooks: Hooks = NO_HOOKS
    """Called at the batch's named points (fault injection in tests and drills)."""
    storage: dict[str, Any] | None = None
    """The job's `[storage]` table, for `s3://` sources and staging (no secrets: each worker
    reads its credentials from its own environment)."""


@dataclass(frozen=True)
class _FastRead:
    good: pa.Table | None = None
    """Typed good rows of the files read on the fast path."""
    rows: dict[str, int] = field(default_factory=dict)
    """Rows staged per file (every row of a fast-path file is valid)."""
    bytes: int = 0
    checksums: dict[str, str | None] = field(default_factory=dict)
    """Checksums of the files read on the fast path, from the bytes read."""


_EMPTY_REJECTS_SCHEMA = pa.schema([("file", pa.string()), ("line", pa.int64()),
                                    ("column", pa.string()), ("rule", pa.string()),
                                    ("value", pa.string())])


def _unchanged_files(task: BatchTask) -> tuple[BatchTask, list[FileOutcome]]:
    """The task without the files that changed since planning, and their quarantine."""
    changed = {path: reason for path, planned in zip(task.files, task.expected)
               if (reason := change_since_planning(path, planned))}
    if not changed:
        return task, []
    kept = [(p, f) for p, f in zip(task.files, task.expected) if p not in changed]
    return (replace(task, files=tuple(p for p, _ in kept), expected=tuple(f for _, f in kept)),
            [FileOutcome(path=path, error=reason) for path, reason in changed.items()])


def skip_pandas_probe() -> None:
    """Spare this process pyarrow's implicit import of pandas (0.2 s of CPU per process).

    The first `pa.array(list)` or `pa.scalar(...)` in a process probes for pandas by
    importing it, only to learn whether the argument might be a pandas object; a worker
    never passes one. The probe is answered once, with pandas made unimportable for that
    moment, and pandas is importable again right after. Explicit pandas use
    (`Table.to_pandas()`, `import pandas`) still works, but pyarrow keeps the answer for
    its implicit checks: in this process, `pa.array(series)` converts a pandas Series as a
    plain sequence (a categorical becomes strings, not a dictionary). So it is skipped
    when custom steps run in the worker, which may hand pandas objects to pyarrow."""
    if "pandas" in sys.modules:
        return
    blocker = _PandasBlocker()
    sys.meta_path.insert(0, blocker)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(blocker)


class _PandasBlocker:
    """An import finder that refuses pandas (see `skip_pandas_probe`)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas":
            raise ImportError("pandas left out of pyarrow's probe by batchrun")


class BatchPipeline:
    """One partition's batch pipeline. No Ray: a worker pool runs it (a Ray actor in
    `execution/pool.py`, or in-process), and tests call it directly."""

    def __init__(self, partition: int, spec: PipelineSpec, node: str | None = None) -> None:
        self.partition = partition
        self.spec = spec
        self.node = node
        """Where it runs (the Ray node id), recorded with each batch."""
        if spec.reader is None and spec.transform is None:
            skip_pandas_probe()
        pa.set_cpu_count(spec.threads)  # one core's worth per worker: no oversubscription
        self.validator = Validator(spec.columns, threads=spec.threads)
        self.fast_typed = fast_typed_columns(spec.columns)
        self.fast_validator = (Validator(spec.columns, spec.threads, self.fast_typed)
                               if self._fast_path_applies() else None)
        self.clean_check = CleanCheck(spec.columns, self.fast_typed)
        self.reader = resolve(spec.reader, spec.code_dirs) if spec.reader else None
        self.transform = resolve(spec.transform, spec.code_dirs) if spec.transform else None
        objectstore.configure(spec.storage)  # clients are made in this process, on first use
        self.storage = storage_for(spec.staging_dir)
        self.out_dir = _folder(self.storage.open_partition(spec.table, partition, spec.run_id))
        self.rejects_dir = _folder(self.storage.open_partition(rejects_table_name(spec.table),
                                                               partition, spec.run_id))

    def process(self, task: BatchTask) -> BatchResult:
        started = time.time()
        log = logger.bind(run_id=self.spec.run_id, batch_id=task.batch_id)
        hooks = self.spec.hooks
        hooks.batch_started(task)
        task, changed = _unchanged_files(task)
        fast, slow_paths = self._read_fast(task)
        raws, outcomes = self._read_all(slow_paths, task.attempt)
        checksums = {path: fast.checksums.get(path) or content_checksum(path)
                     for path in [*fast.rows, *(r.path for r in raws)]}
        for path, planned in zip(task.files, task.expected):
            check_not_changed_while_read(path, planned)
        outcomes += changed
        bytes_read = fast.bytes + sum(len(r.text or b"") for r in raws)
        validated, staged = self._validate(raws, task.batch_id, fast)
        paths = sorted([*fast.rows, *(r.path for r in raws)])
        validated, outcomes = self._quarantine_noisy_files(validated, paths, staged, outcomes)
        if self.transform:
            validated, outcomes = self._transformed(validated, outcomes)
        hooks.before_write(task)
        name = output_name(self.spec.run_id, task.batch_id, task.token)
        output = self._write(validated.good, objectstore.join(str(self.out_dir), name))
        rejects = self._write(validated.rejects, objectstore.join(str(self.rejects_dir), name))
        hooks.after_rename(task)
        log.debug("wrote {} rows, {} rejects", validated.good.num_rows, validated.rejects.num_rows)
        return BatchResult(
            batch_id=task.batch_id, worker=self.partition, output_path=output.path if output else None,
            rejects_path=rejects.path if rejects else None, rows_staged=validated.good.num_rows,
            rows_rejected=validated.rejects.num_rows, bytes_read=bytes_read,
            started_at=started, finished_at=time.time(),
            files=tuple(o if o.error else replace(o, checksum=checksums.get(o.path))
                        for o in outcomes),
            node=self.node, written=tuple(w for w in (output, rejects) if w),
        )

    def _fast_path_applies(self) -> bool:
        return self.spec.fmt == "csv" and self.spec.reader is None and self.spec.csv.header

    def _read_fast(self, task: BatchTask) -> tuple[_FastRead, list[str]]:
        """Files whose every row is valid, read and checked on the fast path; the rest
        (anything unusual, any rejected row) go to the slow path, the reference."""
        for path in task.files:
            self.spec.hooks.before_read(path, task.attempt)
        if self.fast_validator is None:
            return _FastRead(), list(task.files)
        read = read_csv_fast_batch(list(task.files), self.spec.csv, self.spec.columns,
                                   self.fast_typed, self.spec.max_file_bytes)
        if read.table is None:
            return _FastRead(checksums=read.checksums), read.slow
        slow, sizes, rows, sums = read.slow, read.bytes, dict(read.files), read.checksums
        batch = read.table.add_column(len(self.spec.columns), FILE, _file_column(read.files))
        clean = self.clean_check.typed_if_clean(batch)
        if clean is not None:
            return (_FastRead(good=clean, rows=rows, bytes=sum(sizes.values()), checksums=sums),
                    sorted(slow))
        checked = self.fast_validator.validate(batch)
        good = checked.good
        flagged = pc.unique(checked.rejects["file"]) if checked.rejects.num_rows else None
        if flagged is not None:
            good = good.filter(pc.invert(pc.is_in(good[FILE], flagged)))
            for path in flagged.to_pylist():
                sizes.pop(path)
                rows.pop(path)
                slow.append(path)
        return (_FastRead(good=good, rows=rows, bytes=sum(sizes.values()), checksums=sums),
                sorted(slow))

    def _read_all(self, paths: list[str], attempt: int) -> tuple[list[RawFile], list[FileOutcome]]:
        raws: list[RawFile] = []
        failures: dict[str, str] = {}
        for path in paths:
            try:
                raws.append(self._aligned(self._read(path)))
            except SourceError as exc:
                if exc.transient:
                    raise
                failures[path] = exc.reason
            except Exception as exc:  # noqa: BLE001 - one unreadable file must not fail a batch
                failures[path] = f"unexpected error while reading: {last_line(exc)}"
        outcomes = [FileOutcome(path=p, error=failures[p]) for p in paths if p in failures]
        return raws, outcomes

    def _read(self, path: str) -> RawFile:
        if self.reader is None:
            return read_file(path, self.spec.fmt, self.spec.csv, list(self.spec.columns),
                             self.spec.max_file_bytes)
        try:
            table = self.reader(path)
        except Exception as exc:  # noqa: BLE001 - user code: any failure quarantines the file
            raise PermanentSourceError(path, f"reader {self.spec.reader} failed: {last_line(exc)}"
                                       ) from None
        if not isinstance(table, pa.Table):
            raise PermanentSourceError(path, f"reader {self.spec.reader} returned "
                                       f"{type(table).__name__}, expected a pyarrow Table")
        return table_as_raw(path, table)

    def _transformed(self, validated: Validated, outcomes: list[FileOutcome]
                     ) -> tuple[Validated, list[FileOutcome]]:
        """Apply the custom transform to each file's good rows; a failure quarantines the file."""
        good, rejects = validated.good, validated.rejects
        parts, failed = [], {}
        for path in pc.unique(good[FILE]).to_pylist() if good.num_rows else []:
            mine = good.filter(pc.equal(good[FILE], path))
            try:
                parts.append(self._transform_one(mine))
            except Exception as exc:  # noqa: BLE001 - user code
                failed[path] = f"transform {self.spec.transform} failed: {last_line(exc)}"
        if not failed and not parts:
            return validated, outcomes
        outcomes = [FileOutcome(path=o.path, error=failed[o.path]) if o.path in failed else o
                    for o in outcomes]
        dropped = pa.array(list(failed), pa.string())
        rejects = rejects.filter(pc.invert(pc.is_in(rejects["file"], dropped)))
        good = (pa.concat_tables(parts, promote_options="default") if parts
                else good.slice(0, 0))
        return Validated(good=good, rejects=rejects), outcomes

    def _transform_one(self, table: pa.Table) -> pa.Table:
        assert self.transform is not None
        result = self.transform(table)
        if not isinstance(result, pa.Table):
            raise TypeError(f"returned {type(result).__name__}, expected a pyarrow Table")
        for lineage in (FILE, LINE, BATCH):
            if lineage not in result.column_names:
                if result.num_rows != table.num_rows:
                    raise ValueError(f"dropped the {lineage} column while changing the row count")
                result = result.append_column(lineage, table[lineage])
        return result

    def _aligned(self, raw: RawFile) -> RawFile:
        """Exactly the schema's columns, in order, as strings; or quarantine the file."""
        names = [n for n in raw.table.column_names if n != LINE]
        rules = self.spec.validation
        unknown = [n for n in names if n not in self.spec.columns]
        missing = [n for n in self.spec.columns if n not in names]
        if unknown and rules.on_unknown_columns == "reject_file":
            raise PermanentSourceError(raw.path, f"unknown columns {unknown} (schema names "
                                       f"{list(self.spec.columns)}; check the delimiter)")
        required_missing = [n for n in missing if self.spec.columns[n].required]
        if missing and (rules.on_missing_columns == "reject_file" or required_missing):
            raise PermanentSourceError(raw.path, f"missing columns {missing or required_missing}")
        n = raw.table.num_rows
        arrays = [raw.table[c] if c in names else pa.nulls(n, pa.string())
                  for c in self.spec.columns]
        arrays += [_constant(raw.path, n), raw.table[LINE]]
        table = pa.Table.from_arrays(arrays, names=[*self.spec.columns, FILE, LINE])
        return RawFile(path=raw.path, table=table, ragged=raw.ragged, text=raw.text)

    def _validate(self, raws: list[RawFile], batch_id: str,
                  fast: _FastRead) -> tuple[Validated, dict[str, int]]:
        """Slow-path validation of `raws`, joined with the fast path's already-valid rows.
        Also returns the rows staged per file."""
        if raws or fast.good is None:
            validated = self.validator.validate(self._raw_table(raws))
            staged = {**fast.rows, **_counts(validated.good[FILE])}
            good = (validated.good if fast.good is None
                    else pa.concat_tables([validated.good, fast.good]))
        else:
            validated = Validated(good=fast.good, rejects=_EMPTY_REJECTS_SCHEMA.empty_table())
            staged, good = dict(fast.rows), fast.good
        if fast.good is not None and raws:  # keep the batch file in (file, line) order
            good = _sorted_by_file_and_line(good)
        good = good.append_column(BATCH, _constant(batch_id, good.num_rows))
        rejects = self._full_rejects(validated.rejects, raws, batch_id)
        return Validated(good=good, rejects=rejects), staged

    def _raw_table(self, raws: list[RawFile]) -> pa.Table:
        if raws:
            return pa.concat_tables([r.table for r in raws])
        return pa.Table.from_arrays(
            [pa.array([], pa.string())] * (len(self.spec.columns) + 1)
            + [pa.array([], pa.int64())], names=[*self.spec.columns, FILE, LINE])

    def _full_rejects(self, rejects: pa.Table, raws: list[RawFile], batch_id: str) -> pa.Table:
        """Add run, batch and the raw line to every reject; add the ragged rows."""
        by_path = {r.path: r for r in raws}
        parts = []
        for path in pc.unique(rejects["file"]).to_pylist() if rejects.num_rows else []:
            mine = rejects.filter(pc.equal(rejects["file"], path))
            lines = by_path[path].raw_lines(mine["line"].to_pylist())
            parts.append(mine.append_column("raw_line", pa.array(lines, pa.string())))
        for raw in raws:
            if raw.ragged:
                parts.append(_ragged_rejects(raw))
        if not parts:
            return REJECT_SCHEMA.empty_table()
        table = pa.concat_tables(parts).sort_by([("file", "ascending"), ("line", "ascending")])
        n = table.num_rows
        table = table.add_column(0, "batch_id", _constant(batch_id, n))
        table = table.add_column(0, "run_id", _constant(self.spec.run_id, n))
        return table.select(REJECT_SCHEMA.names).cast(REJECT_SCHEMA)

    def _quarantine_noisy_files(self, validated: Validated, paths: list[str],
                                staged: dict[str, int], outcomes: list[FileOutcome]
                                ) -> tuple[Validated, list[FileOutcome]]:
        """Quarantine files past max_reject_ratio; record every file's outcome."""
        rejected = _counts(validated.rejects["file"])
        ratio = self.spec.validation.max_reject_ratio
        noisy = {}
        for path in paths:
            total = staged.get(path, 0) + rejected.get(path, 0)
            if total and rejected.get(path, 0) / total > ratio:
                noisy[path] = (f"{rejected[path]} of {total} rows rejected, more than "
                               f"max_reject_ratio {ratio}")
        outcomes = outcomes + [
            FileOutcome(path=path, error=noisy[path]) if path in noisy else
            FileOutcome(path=path, rows_staged=staged.get(path, 0),
                        rows_rejected=rejected.get(path, 0),
                        warning=None if staged.get(path) or path in rejected
                        else "header only, no rows")
            for path in paths
        ]
        if noisy:
            keep = pa.array(list(noisy), pa.string())
            validated = Validated(
                good=validated.good.filter(pc.invert(pc.is_in(validated.good[FILE], keep))),
                rejects=validated.rejects.filter(
                    pc.invert(pc.is_in(validated.rejects["file"], keep))))
        return validated, outcomes

    def _write(self, table: pa.Table, final: str) -> WrittenFile | None:
        if not table.num_rows:
            return None
        return self.storage.write_parquet(table, final)


def _folder(location: str) -> Path | str:
    """A partition: a local folder as a Path, an `s3://` prefix as it is."""
    return location if objectstore.is_object(location) else Path(location)


LINEAGE_CHUNK_BYTES = 64 * 2**20
"""Bytes per chunk of a lineage column: rows × path length passes 2 GiB, the limit of one
string array, for a big enough file (a 2 GB file of short rows and a long path)."""


def _file_column(files: list[tuple[str, int]]) -> pa.ChunkedArray:
    """Each file's path repeated once per row of it, in order, in bounded chunks."""
    chunks = [chunk for path, rows in files for chunk in _constant(path, rows).chunks]
    return pa.chunked_array(chunks, pa.string())


def _constant(value: str, n: int) -> pa.ChunkedArray:
    """One string repeated n times, in chunks of at most LINEAGE_CHUNK_BYTES (plus one
    value); the full chunks are one shared array, so memory is one chunk, not n values."""
    per_chunk = max(1, LINEAGE_CHUNK_BYTES // max(1, len(value.encode())))
    scalar = pa.scalar(value, pa.string())
    full, rest = divmod(n, per_chunk)
    chunks = [pa.repeat(scalar, per_chunk)] * full if full else []
    if rest or not chunks:
        chunks.append(pa.repeat(scalar, rest))
    return pa.chunked_array(chunks, pa.string())


def _sorted_by_file_and_line(table: pa.Table) -> pa.Table:
    """`table` in (_file, _line) order without taking `_file` (a take concatenates its
    chunks, past 2 GiB for a huge file): sort by the file's rank, rebuild `_file`."""
    paths = sorted(pc.unique(table[FILE]).to_pylist())
    ranks = pc.index_in(table[FILE], value_set=pa.array(paths, pa.string()))
    order = pc.sort_indices(pa.table({"f": ranks, "l": table[LINE]}),
                            sort_keys=[("f", "ascending"), ("l", "ascending")])
    counts = _counts(table[FILE])
    position = table.column_names.index(FILE)
    rest = table.drop_columns([FILE]).take(order)
    return rest.add_column(position, FILE, _file_column([(p, counts[p]) for p in paths]))


def _counts(column: pa.ChunkedArray) -> dict[str, int]:
    if len(column) == 0:
        return {}
    counted = pc.value_counts(column)
    return dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist()))


def _ragged_rejects(raw: RawFile) -> pa.Table:
    expected = raw.table.num_columns - 2
    return pa.table({
        "file": pa.array([raw.path] * len(raw.ragged), pa.string()),
        "line": pa.array([r.line for r in raw.ragged], pa.int64()),
        "column": pa.array([None] * len(raw.ragged), pa.string()),
        "rule": pa.array([r.rule for r in raw.ragged], pa.string()),
        "value": pa.array([r.detail or f"{r.fields} fields, expected {expected}"
                           for r in raw.ragged], pa.string()),
        "raw_line": pa.array([r.text for r in raw.ragged], pa.string()),
    })
