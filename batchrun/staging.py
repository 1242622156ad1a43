"""The staging layer: DuckDB views over committed Parquet files only.

A run's table is the union of the Parquet files its committed batches wrote, read in a
deterministic order (source file, line). Files that exist on disk but have no commit
record (a batch killed between its rename and the driver's commit) are never listed,
and `remove_orphans` deletes them when a run or resume finishes. `query --run` reads one
run's table; the job's table across runs (what `query` and `staging.duckdb` show) is
built from the same pieces in jobtable.py.

Staging on object storage (`s3://`) is read offline: DuckDB's own S3 support (httpfs) is
an extension it would download at run time, so the committed objects are opened through
pyarrow's S3 file system and handed to DuckDB as registered Arrow datasets. Such views
live only in the connection that registered them, so no `staging.duckdb` is published
for object storage; `batchrun query` (or `query_connection`) builds them each time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import duckdb

from batchrun import objectstore
from batchrun.coltypes import duckdb_type
from batchrun.errors import CommittedOutputError, EnvironmentProblem
from batchrun.layout import BATCH, FILE, LINE, REJECT_SCHEMA, atomic_path, rejects_table_name
from batchrun.model import Committed
from batchrun.readers.custom import last_line

STAGING_DB = "staging.duckdb"


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A SQL string literal: every value from a job file, a path or a run id goes in so."""
    return "'" + text.replace("'", "''") + "'"


def sql_paths(paths: Iterable[str]) -> str:
    return "[" + ", ".join(quote_literal(p) for p in paths) + "]"


def table_view_sql(columns: dict[str, str], paths: list[str], unique: str | None = None,
                   registered: bool = False) -> str:
    if not paths:
        typed = [f"CAST(NULL AS {duckdb_type(t)}) AS {quote_identifier(n)}" for n, t in columns.items()]
        typed += [f"CAST(NULL AS VARCHAR) AS {FILE}", f"CAST(NULL AS BIGINT) AS {LINE}",
                  f"CAST(NULL AS VARCHAR) AS {BATCH}"]
        return f"SELECT {', '.join(typed)} WHERE false"
    source = OUTPUTS if registered else f"read_parquet({sql_paths(paths)}, union_by_name = true)"
    if unique:
        hidden = UNIQUE if registered else f"read_parquet({sql_paths([unique])})"
        source += (f" AS t ANTI JOIN {hidden} AS u"
                   f" ON t.{FILE} = u.file AND t.{LINE} = u.line")
    return f"SELECT * FROM {source} ORDER BY {FILE}, {LINE}"


def rejects_view_sql(paths: list[str], registered: bool = False) -> str:
    if not paths:
        typed = [f"CAST(NULL AS {'BIGINT' if f.name == 'line' else 'VARCHAR'}) AS {quote_identifier(f.name)}"
                 for f in REJECT_SCHEMA]
        return f"SELECT {', '.join(typed)} WHERE false"
    source = REJECTS if registered else f"read_parquet({sql_paths(paths)})"
    return f"SELECT * FROM {source} ORDER BY file, line"


def check_committed_files(committed: Committed, paths: Iterable[str] | None = None) -> None:
    """Each committed file (of `paths`, default all) exists with its recorded size, one
    stat each: a view over a lost or truncated file fails in DuckDB, or reads wrong rows.
    Objects: one listing per partition, not a request per object."""
    paths = [*committed.outputs, *committed.rejects] if paths is None else list(paths)
    listed = _object_sizes([p for p in paths if objectstore.is_object(p)], committed.storage)
    for path in paths:
        if objectstore.is_object(path):
            _check_size(committed, path, listed.get(path))
            continue
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            raise CommittedOutputError(path, "missing", committed.run_id) from None
        except OSError as exc:
            raise CommittedOutputError(path, f"unreadable ({exc.strerror})",
                                       committed.run_id) from None
        recorded = committed.sizes.get(path)
        if recorded is not None and size != recorded:
            raise CommittedOutputError(path, f"size {size} != recorded {recorded}",
                                       committed.run_id)


def _check_size(committed: Committed, path: str, size: int | None) -> None:
    if size is None:
        raise CommittedOutputError(path, "missing", committed.run_id)
    recorded = committed.sizes.get(path)
    if recorded is not None and size != recorded:
        raise CommittedOutputError(path, f"size {size} != recorded {recorded}", committed.run_id)


def _object_sizes(paths: list[str], storage: dict[str, object] | None) -> dict[str, int]:
    """uri → size of every object in the partitions that hold `paths`."""
    settings = objectstore.Settings.of(storage)
    sizes: dict[str, int] = {}
    for prefix in sorted({path.rsplit("/", 1)[0] + "/" for path in paths}):
        where = objectstore.Location.of(prefix)
        sizes.update((o.uri, o.size) for o in objectstore.client(settings).list(where.bucket,
                                                                                where.key))
    return sizes


OUTPUTS, REJECTS, UNIQUE = "__batchrun_outputs", "__batchrun_rejects", "__batchrun_unique"
"""The names under which committed objects are registered, as Arrow datasets, in DuckDB."""


def on_object_storage(committed: Committed) -> bool:
    return any(objectstore.is_object(p) for p in committed.paths)


def create_views(db: duckdb.DuckDBPyConnection, table: str, columns: dict[str, str],
                 committed: Committed) -> None:
    check_committed_files(committed)
    registered = on_object_storage(committed)
    if registered:
        _register_objects(db, committed)
    table_sql = table_view_sql(columns, committed.outputs, committed.unique, registered)
    try:
        create_table_views(db, table, table_sql,
                           rejects_view_sql(committed.rejects, registered), registered)
    except duckdb.Error as exc:
        raise unreadable_output(committed, exc) from None


def create_table_views(db: duckdb.DuckDBPyConnection, table: str, table_sql: str,
                       rejects_sql: str, registered: bool) -> None:
    """`<table>` and `<table>__rejects` as views of the two queries: temporary ones over
    registered Arrow datasets (they live only in this connection)."""
    kind = "TEMP VIEW" if registered else "VIEW"
    db.execute(f"CREATE OR REPLACE {kind} {quote_identifier(table)} AS {table_sql}")
    db.execute(f"CREATE OR REPLACE {kind} {quote_identifier(rejects_table_name(table))} AS "
               f"{rejects_sql}")


def _register_objects(db: duckdb.DuckDBPyConnection, committed: Committed) -> None:
    """Register the committed objects as Arrow datasets read through pyarrow's S3 file
    system (see the module's docstring): no DuckDB extension, no download."""
    system = objectstore.filesystem(objectstore.Settings.of(committed.storage))
    for name, paths in ((OUTPUTS, committed.outputs), (REJECTS, committed.rejects),
                        (UNIQUE, [committed.unique] if committed.unique else [])):
        if paths:
            try:
                db.register(name, object_dataset(paths, system))
            except OSError as exc:
                raise unreadable_output(committed, exc) from None


def object_dataset(paths: list[str], system: object) -> object:
    """A pyarrow dataset over committed Parquet objects, its schema the union of theirs
    (DuckDB's `union_by_name`: a transform may add a column to some files only)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    where = [objectstore.Location.of(p).arrow_path for p in paths]
    found = ds.dataset(where, format="parquet", filesystem=system)
    schema = pa.unify_schemas([f.physical_schema for f in found.get_fragments()],
                              promote_options="permissive")
    return ds.dataset(where, format="parquet", filesystem=system, schema=schema)


def named_output_error(committed: Committed, exc: Exception) -> CommittedOutputError | None:
    """The committed file a DuckDB error names (e.g. a damaged data page), if it names one."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    for path in [*committed.outputs, *committed.rejects]:
        if path in reason:
            detail = reason.split(path)[-1].lstrip("\"': ") or reason.replace(path, "...")
            return CommittedOutputError(path, f"unreadable ({detail})", committed.run_id)
    return None


def unreadable_output(committed: Committed, exc: Exception) -> EnvironmentProblem:
    """The error for DuckDB failing on committed files of the right size: the file the error
    names, or else the first whose Parquet footer does not parse."""
    import pyarrow.parquet as pq

    named = named_output_error(committed, exc)
    if named is not None:
        return named
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    for path in [*committed.outputs, *committed.rejects]:
        if objectstore.is_object(path):
            continue  # pyarrow's error above names the object it failed on
        try:
            pq.read_metadata(path)
        except (OSError, ValueError) as damaged:  # pyarrow's ArrowInvalid is a ValueError
            return CommittedOutputError(path, f"unreadable ({last_line(damaged)})",
                                        committed.run_id)
    return EnvironmentProblem(f"cannot read the committed output of run {committed.run_id}:"
                              f" {reason} (run batchrun verify {committed.run_id})")


def query_connection(table: str, columns: dict[str, str], committed: Committed,
                     unsafe: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the run's table and rejects views.

    Unless `unsafe`, it may read the run's committed files and nothing else: no other
    file, no network, no extension loaded or installed, and the query cannot turn any
    of that back on. Writing is refused by `read_only_problem` (DuckDB lets a query
    write to an allowed path, and these are the run's committed files)."""
    db = duckdb.connect()
    create_views(db, table, columns, committed)
    if not unsafe:
        _confine(db, sorted(committed.paths))
    return db


_CONFINED = ("SET autoinstall_known_extensions = false", "SET autoload_known_extensions = false",
             "SET enable_external_access = false", "SET lock_configuration = true")


def _confine(db: duckdb.DuckDBPyConnection, readable: list[str]) -> None:
    db.execute(f"SET allowed_paths = {sql_paths(readable)}")
    for setting in _CONFINED:  # lock_configuration last: nothing can be SET after it
        db.execute(setting)


_EXPLAINED = re.compile(r"\s*EXPLAIN\s+(?:ANALYZE\s+|\([^)]*\)\s*)?(?P<inner>.*)",
                        re.IGNORECASE | re.DOTALL)


def read_only_problem(sql: str) -> str | None:
    """Why `sql` may not run on a confined connection (it is not only SELECT statements,
    or EXPLAINs of one), or None. SQL that does not parse is left to DuckDB to report."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error:
        return None
    for statement in statements:
        if not _reads_only(statement):
            return (f"a {statement.type.name} statement; by default query only reads the "
                    "run's staged files (SELECT, EXPLAIN); --unsafe lifts this")
    return None


def _reads_only(statement: duckdb.Statement) -> bool:
    if statement.type == duckdb.StatementType.SELECT:
        return True
    explained = _EXPLAINED.fullmatch(statement.query)
    if statement.type != duckdb.StatementType.EXPLAIN or not explained:
        return False
    try:  # what EXPLAIN (ANALYZE runs it) explains must read only, and parse on its own
        inner = duckdb.extract_statements(explained["inner"])
    except duckdb.Error:
        return False
    return len(inner) == 1 and _reads_only(inner[0])


def publish_staging_db(staging_dir: Path | str,
                       create_views: Callable[[duckdb.DuckDBPyConnection], None]) -> Path | None:
    """Write `staging.duckdb` (views with absolute paths, made by `create_views`)
    atomically, for any DuckDB client.

    Built under a temporary name and renamed over the old file, so a client holding the
    old one open keeps a consistent (older) view and nothing waits on its lock. None for
    staging on object storage (see the module's docstring).
    """
    if objectstore.is_object(staging_dir):
        return None
    staging_dir = Path(staging_dir)
    final = staging_dir / STAGING_DB
    temporary = staging_dir / f".{STAGING_DB}.{os.getpid()}.tmp"
    with atomic_path(final, durable=False, temporary=temporary):
        db = duckdb.connect(str(temporary))
        try:
            create_views(db)
        finally:
            db.close()
    return final


def staged_files(staging_dir: Path | str, table: str, run_id: str,
                 storage: dict[str, object] | None = None) -> list[Path] | list[str]:
    """Every file (or object) a run's workers left in the table and rejects partitions."""
    if objectstore.is_object(staging_dir):
        return staged_objects(str(staging_dir), table, run_id, storage)
    staging_dir = Path(staging_dir)
    found: list[Path] = []
    for name in (table, rejects_table_name(table)):
        root = staging_dir / name
        if root.is_dir():
            found += [p for p in root.glob("part-*/*") if p.name.lstrip(".").startswith(run_id)]
    return found


def staged_objects(root: str, table: str, run_id: str,
                   storage: dict[str, object] | None = None) -> list[str]:
    """Every object a run's workers (and its unique pass) left under `part-*/`."""
    settings = objectstore.Settings.of(storage)
    found: list[str] = []
    for name in (table, rejects_table_name(table)):
        where = objectstore.Location.of(objectstore.join(root, name) + "/")
        for listed in objectstore.client(settings).list(where.bucket, where.key):
            part, _, base = listed.uri[len(root) + len(name) + 2:].partition("/")
            if part.startswith("part-") and "/" not in base and base.startswith(run_id):
                found.append(listed.uri)
    return found


def remove_orphans(staging_dir: Path | str, table: str, run_id: str, committed: set[str],
                   storage: dict[str, object] | None = None) -> int:
    """Delete this run's uncommitted outputs and temporary files (or objects); return how
    many."""
    removed = 0
    for path in staged_files(staging_dir, table, run_id, storage):
        if str(path) not in committed:
            delete_output(path, storage)
            removed += 1
    return removed


def delete_output(path: Path | str, storage: dict[str, object] | None = None) -> None:
    """Remove one staged file or object (gone already: nothing to do)."""
    if objectstore.is_object(path):
        where = objectstore.Location.of(str(path))
        try:
            objectstore.client(objectstore.Settings.of(storage)).delete(where)
        except objectstore.ObjectStoreError as exc:
            if not exc.missing:
                raise
    else:
        Path(path).unlink(missing_ok=True)
