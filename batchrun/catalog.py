"""The catalog: runs, batches and files, written by the driver only.

DuckDB lets one read-write process own a database file, and while it does no other
process may open it, not even read-only. The catalog is the one thing written during a
run *and* read from other terminals (`status`, `runs`), so it lives in SQLite in WAL
mode: a single writer (the driver) and any number of concurrent readers, ~1 ms a commit.
DuckDB stays the staging and query layer (see `staging.py`). Every write here is one
transaction; a batch's commit record is the only thing that makes its output visible.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tenacity import retry, retry_if_exception, stop_after_delay, wait_random

from batchrun.errors import (
    BatchrunError,
    CatalogError,
    DiskFullError,
    EnvironmentProblem,
    RunNotFoundError,
    bounded,
    disk_full_reason,
)
from batchrun.model import (
    AttemptEnd,
    AttemptOutcome,
    BatchCounts,
    BatchResult,
    BatchState,
    Committed,
    CommittedFile,
    FailedFile,
    FileCounts,
    FileState,
    Fingerprint,
    PlanCounts,
    PlannedBatch,
    RoundRecord,
    RowCounts,
    RunCounts,
    RunRecord,
    RunState,
    ServedFile,
    SkippedFile,
    WarnedFile,
    WrittenFile,
)
from batchrun.private import private_dir, private_file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, job TEXT NOT NULL, table_name TEXT NOT NULL,
    job_file TEXT NOT NULL, staging_dir TEXT NOT NULL, config_json TEXT NOT NULL,
    schema_json TEXT, state TEXT NOT NULL, pid INTEGER, host TEXT,
    created_at REAL NOT NULL, started_at REAL, finished_at REAL, message TEXT,
    unique_path TEXT
);
CREATE TABLE IF NOT EXISTS batches (
    run_id TEXT NOT NULL, batch_id TEXT NOT NULL, seq INTEGER NOT NULL, source TEXT,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    n_files INTEGER NOT NULL, bytes INTEGER NOT NULL,
    rows_staged INTEGER, rows_rejected INTEGER, output_path TEXT, rejects_path TEXT,
    worker INTEGER, queued_at REAL, started_at REAL, finished_at REAL,
    last_error TEXT, error_kind TEXT, node TEXT,
    PRIMARY KEY (run_id, batch_id)
);
CREATE TABLE IF NOT EXISTS files (
    run_id TEXT NOT NULL, path TEXT NOT NULL, batch_id TEXT NOT NULL, source TEXT,
    size INTEGER NOT NULL, mtime REAL NOT NULL, state TEXT NOT NULL,
    rows_staged INTEGER, rows_rejected INTEGER, error TEXT, warning TEXT,
    rows_unique INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, path)
);
CREATE INDEX IF NOT EXISTS files_by_batch ON files (run_id, batch_id);
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT NOT NULL, batch_id TEXT NOT NULL, attempt INTEGER NOT NULL, source TEXT,
    worker INTEGER, bytes INTEGER, n_files INTEGER,
    queued_at REAL NOT NULL, started_at REAL, finished_at REAL, ended_at REAL,
    outcome TEXT, error TEXT, rows_staged INTEGER, rows_rejected INTEGER,
    PRIMARY KEY (run_id, batch_id, attempt)
);
CREATE TABLE IF NOT EXISTS manifest (
    job TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    PRIMARY KEY (job, path)
);
"""
"""`attempts` keeps one row per dispatch (the metrics): queued_at is when the driver
dispatched it, started_at/finished_at when the worker began and ended it (committed
attempts only), ended_at when the driver collected the outcome: committed, retried,
failed, abandoned (stopped), or lost (the driver died; set by the next resume).

`manifest` caches, per job and path, the content checksum a run's plan computed for a
file whose size matched its served version but whose mtime did not (a touched file): the
next plan reuses it while (size, mtime_ns) stay the same, instead of reading the file
again (see `batchrun.manifest`). Written by runs only, never by `batchrun plan`."""

_MIGRATIONS: list[tuple[str, str, str]] = [
    # (table, column, declaration): columns added after a catalog may already exist.
    # Append here; `Catalog.__init__` adds each one that an older catalog lacks.
    ("runs", "run_seq", "INTEGER"),
    # Insertion order of runs: "latest" never depends on the wall clock. NULL in runs
    # recorded before the column existed, which sort before every newer run (by rowid).
    ("batches", "output_size", "INTEGER"), ("batches", "output_checksum", "TEXT"),
    ("batches", "rejects_size", "INTEGER"), ("batches", "rejects_checksum", "TEXT"),
    ("runs", "unique_size", "INTEGER"), ("runs", "unique_checksum", "TEXT"),
    ("files", "mtime_ns", "INTEGER"),
    ("files", "sha256", "TEXT"),
    ("files", "dev", "INTEGER"), ("files", "ino", "INTEGER"),
    # The file's identity (st_dev, st_ino) when planned, stored as signed 64-bit
    # integers (`sql_int`); NULL in runs planned before they were recorded.
    ("batches", "node_ip", "TEXT"),
    # The IP of the node that committed the batch (`node` is its Ray node id).
    ("files", "checksum", "TEXT"),
    # The xxh3_128 of the bytes the worker read ("xxh3_128:<hex>"; local files only).
    ("runs", "files_new", "INTEGER"), ("runs", "files_changed", "INTEGER"),
    ("runs", "files_unchanged", "INTEGER"), ("runs", "files_settling", "INTEGER"),
    ("runs", "full_refresh", "INTEGER"),
    # How the run's plan classified the matched files (NULL: planned before it did).
    ("runs", "cleaned_at", "REAL"),
    # When `batchrun clean` dropped (some of) the run's batches: its files not committed
    # any more are deleted next, and the run's row once no batch of it is left.
]
_NEWEST_FIRST = "ORDER BY run_seq DESC, rowid DESC"
_SINCE_FULL_REFRESH = (
    " AND coalesce(r.run_seq, -1) >= (SELECT coalesce(max(run_seq), -1) FROM runs"
    " WHERE job = r.job AND full_refresh = 1 AND state = 'succeeded'"
    " AND coalesce(files_settling, 0) = 0)")
"""Runs whose files a job's table serves: those since its latest succeeded full refresh
that held back no settling file (one that did would drop the served version of a file
it left for the next run)."""


def sql_int(value: int | None) -> int | None:
    """An unsigned 64-bit number (st_ino on overlayfs may set the top bit) as SQLite's
    signed INTEGER; `py_int` turns it back."""
    return value - (1 << 64) if value is not None and value >= 1 << 63 else value


def py_int(value: int | None) -> int | None:
    return value + (1 << 64) if value is not None and value < 0 else value


def stored_fingerprint(row: dict[str, Any]) -> Fingerprint:
    """The planned fingerprint of a `files` row."""
    return Fingerprint(row["size"], row["mtime_ns"], row["sha256"], py_int(row["ino"]),
                       py_int(row["dev"]))


class Catalog:
    """A SQLite catalog in the state dir, opened once per command and closed by it:

        with Catalog(state_dir) as catalog:
            start_run(job, catalog)

    Every SQLite error leaves this class as a `CatalogError` naming the catalog's path, or
    as a `DiskFullError` when the state dir is full. `create=False` (the read-only
    commands) refuses a state dir without a catalog instead of creating one;
    `read_only=True` (`batchrun plan`) also writes nothing at all (see `_read_only`).

    One connection, used by one thread at a time: a run's planning thread records the
    plan while the main thread starts Ray, and hands the catalog back before the main
    thread touches it; a lock keeps even a mistaken overlap from interleaving two
    statements."""

    def __init__(self, state_dir: Path, create: bool = True, read_only: bool = False) -> None:
        self.path = Path(state_dir) / "catalog.sqlite"
        if (read_only or not create) and not self.path.is_file():
            raise RunNotFoundError(f"no runs in {state_dir}: it holds no catalog (a job's runs"
                                   " live in .batchrun beside its job file: pass --job"
                                   " JOB_FILE, or --state-dir DIR)")
        self._lock = threading.RLock()
        if read_only:
            with self._guard("open"):
                self._db = self._read_only()
            return
        _make_state_dir(self.path.parent)
        with self._guard("open"):
            private_file(self.path)  # its -wal and -shm files take the same mode
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                       check_same_thread=False)
            self._prepare()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @retry(retry=retry_if_exception(lambda exc: "locked" in str(exc)), reraise=True,
           stop=stop_after_delay(30), wait=wait_random(0.01, 0.1))
    def _prepare(self) -> None:
        """WAL mode, tables and missing columns. Switching to WAL does not wait on SQLite's
        busy timeout when another process is creating the same catalog at that moment
        ("database is locked"), so the first open is retried for a while."""
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._migrate()

    def _read_only(self) -> sqlite3.Connection:
        """A connection that writes nothing: not the catalog, not its -wal or -shm files.

        A read-only SQLite connection to a WAL database creates the -wal and -shm files
        when they are missing (a catalog no process has open) and cannot remove them, so
        such a catalog is opened `immutable`; while they exist (a run is going) it is
        opened `mode=ro`, which reads the live WAL. A catalog older than this batchrun
        (a migration missing) is copied into memory and migrated there."""
        live = self.path.with_name(self.path.name + "-wal").exists()
        uri = f"{self.path.resolve().as_uri()}?{'mode=ro' if live else 'immutable=1'}"
        db = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None,
                             check_same_thread=False)
        self._db = db
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if "runs" in tables and "manifest" in tables and not self._missing_columns():
            return db
        self._db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        db.backup(self._db)
        db.close()
        self._db.executescript(_SCHEMA)
        self._migrate()
        return self._db

    @contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        try:
            with self._lock:
                yield
        except (sqlite3.Error, OSError) as exc:
            raise self._error(exc, doing) from None

    def _error(self, exc: Exception, doing: str) -> BatchrunError:
        """One line naming the catalog (or the full state dir) for an SQLite or OS error."""
        reason = disk_full_reason(exc, self.path.parent)
        if reason:
            return DiskFullError("state dir", str(self.path.parent), reason)
        text = str(exc)
        if "malformed" in text or "not a database" in text:
            text += " (the catalog is damaged: restore it from a backup, or use a new --state-dir)"
        return CatalogError(f"catalog {self.path}: cannot {doing}: {text}")

    def _migrate(self) -> None:
        """Add the columns of `_MIGRATIONS` that an older catalog does not have yet. Another
        process may open the same catalog at the same moment (`status` while a run starts):
        the columns are looked for again under the write lock, so only one adds them."""
        if not self._missing_columns():
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for table, column, declaration in self._missing_columns():
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _missing_columns(self) -> list[tuple[str, str, str]]:
        present: dict[str, set[str]] = {}
        for table, _, _ in _MIGRATIONS:
            if table not in present:
                present[table] = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
        return [m for m in _MIGRATIONS if m[1] not in present[m[0]]]

    def close(self) -> None:
        """Close the connection, after any statement another thread (planning) is running."""
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write. BEGIN IMMEDIATE takes the write lock up front. Inside another
        transaction it joins that one: the writes of both commit (or roll back) together,
        so a caller can make several writes, and its own step between them, one. Only the
        thread that began it can join it: another thread waits on the lock until it ends."""
        with self._guard("write"):
            if self._db.in_transaction:
                yield self._db
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        """Undo an open transaction (SQLite may already have, e.g. on a full disk)."""
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def rows(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        with self._guard("read"):
            cursor = self._db.execute(sql, tuple(params))
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    # -- planning ---------------------------------------------------------------

    def create_run(self, run: RunRecord, batches: list[PlannedBatch]) -> None:
        """Write the whole plan in one transaction, before anything is dispatched."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO runs (run_id, job, table_name, job_file, staging_dir, config_json,"
                " schema_json, state, pid, host, created_at, started_at, finished_at, message,"
                " files_new, files_changed, files_unchanged, files_settling, full_refresh,"
                " run_seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,"
                " (SELECT coalesce(max(run_seq), 0) + 1 FROM runs))",
                (run.run_id, run.job, run.table, run.job_file, run.staging_dir,
                 json.dumps(run.config), json.dumps(run.schema), run.state.value, run.pid,
                 run.host, run.created_at, run.started_at, run.finished_at,
                 bounded(run.message), *_selection_values(run.selection)),
            )
            db.executemany(
                "INSERT INTO batches (run_id, batch_id, seq, source, state, n_files, bytes)"
                " VALUES (?,?,?,?,?,?,?)",
                ((run.run_id, b.batch_id, b.seq, b.source, BatchState.PENDING.value,
                  len(b.files), b.bytes) for b in batches),
            )
            db.executemany(  # rows made one at a time: a million files, no million tuples
                "INSERT INTO files (run_id, path, batch_id, source, size, mtime, mtime_ns,"
                " sha256, dev, ino, state) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                ((run.run_id, f.path, b.batch_id, f.source, f.size, f.mtime, f.mtime_ns,
                  f.sha256, sql_int(f.dev), sql_int(f.ino), FileState.PENDING.value)
                 for b in batches for f in b.files),
            )

    # -- run lifecycle ------------------------------------------------------------

    def set_run_state(self, run_id: str, state: RunState, *, pid: int | None = None,
                      host: str | None = None, message: str | None = None,
                      since: float | None = None) -> None:
        """`since`: when a fresh run began (its planning), kept as started_at."""
        now = time.time()
        with self.transaction() as db:
            if state is RunState.RUNNING:
                db.execute(
                    "UPDATE runs SET state=?, pid=?, host=?, finished_at=NULL, message=NULL,"
                    " started_at=COALESCE(started_at, ?) WHERE run_id=?",
                    (state.value, pid, host, since or now, run_id),
                )
            else:
                db.execute(
                    "UPDATE runs SET state=?, finished_at=?, message=? WHERE run_id=?",
                    (state.value, now, bounded(message), run_id),
                )

    def reset_unfinished_batches(self, run_id: str) -> int:
        """Before a resume: running, failed and skipped batches go back to pending."""
        with self.transaction() as db:
            db.execute("UPDATE attempts SET outcome=? WHERE run_id=? AND outcome IS NULL",
                       (AttemptOutcome.LOST.value, run_id))
            cursor = db.execute(
                "UPDATE batches SET state=?, worker=NULL WHERE run_id=? AND state IN (?,?,?)",
                (BatchState.PENDING.value, run_id, BatchState.RUNNING.value,
                 BatchState.FAILED.value, BatchState.SKIPPED.value),
            )
            db.execute(
                "UPDATE files SET state=?, error=NULL WHERE run_id=? AND batch_id IN"
                " (SELECT batch_id FROM batches WHERE run_id=? AND state=?)",
                (FileState.PENDING.value, run_id, run_id, BatchState.PENDING.value),
            )
            return cursor.rowcount

    def quarantined_files(self, run_id: str) -> list[dict[str, Any]]:
        """Failed files of committed batches: quarantined by a worker, with their plan."""
        return self.rows(
            "SELECT f.path, f.batch_id, f.source, f.size, f.mtime_ns, f.sha256, f.dev, f.ino,"
            " f.error FROM files f JOIN batches b ON b.run_id = f.run_id AND b.batch_id = f.batch_id"
            " WHERE f.run_id=? AND f.state=? AND b.state=? ORDER BY f.path",
            (run_id, FileState.FAILED.value, BatchState.COMMITTED.value))

    def next_seq(self, run_id: str) -> int:
        found = self.rows("SELECT coalesce(max(seq), -1) + 1 AS seq FROM batches WHERE run_id=?",
                          (run_id,))
        return int(found[0]["seq"])

    def replan_files(self, run_id: str, batches: list[PlannedBatch],
                     warnings: dict[str, str]) -> None:
        """Move files into new pending batches with their new fingerprints, in one
        transaction; their earlier batches stay committed. A path the run lacks (a file
        found again under another spelling) is added."""
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO batches (run_id, batch_id, seq, source, state, n_files, bytes)"
                " VALUES (?,?,?,?,?,?,?)",
                [(run_id, b.batch_id, b.seq, b.source, BatchState.PENDING.value,
                  len(b.files), b.bytes) for b in batches])
            db.executemany(
                "INSERT INTO files (run_id, path, batch_id, source, size, mtime, mtime_ns,"
                " sha256, dev, ino, state, warning) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (run_id, path) DO UPDATE SET batch_id=excluded.batch_id,"
                " size=excluded.size, mtime=excluded.mtime, mtime_ns=excluded.mtime_ns,"
                " sha256=excluded.sha256, dev=excluded.dev, ino=excluded.ino,"
                " state=excluded.state, rows_staged=NULL, rows_rejected=NULL, error=NULL,"
                " warning=excluded.warning",
                [(run_id, f.path, b.batch_id, f.source, f.size, f.mtime, f.mtime_ns, f.sha256,
                  sql_int(f.dev), sql_int(f.ino), FileState.PENDING.value, warnings.get(f.path))
                 for b in batches for f in b.files])

    def identities(self, run_id: str) -> list[tuple[str, str, tuple[int, int] | None]]:
        """(path, state, planned (st_dev, st_ino) or None) of every file of the run."""
        return [(row["path"], row["state"], stored_fingerprint(row).identity) for row in self.rows(
            "SELECT path, state, size, mtime_ns, sha256, dev, ino FROM files WHERE run_id=?",
            (run_id,))]

    def set_file_errors(self, run_id: str, errors: dict[str, str],
                        state: FileState = FileState.FAILED) -> None:
        """Set the state and reason of files of the run (path → reason)."""
        with self.transaction() as db:
            db.executemany("UPDATE files SET state=?, error=? WHERE run_id=? AND path=?",
                           [(state.value, bounded(error), run_id, path)
                            for path, error in errors.items()])

    # -- dispatch and commit ----------------------------------------------------------

    def record_progress(self, run_id: str, current: RoundRecord) -> None:
        """One transaction per scheduler round: dispatched, committed, retried, failed and
        skipped batches, and the attempts' metrics. A result for a batch that is already
        committed is ignored (idempotent commit)."""
        if not current:
            return
        with self.transaction() as db:
            db.executemany(
                "UPDATE batches SET state=?, worker=?, attempts=?, queued_at=?"
                " WHERE run_id=? AND batch_id=? AND state<>?",
                [(BatchState.RUNNING.value, d.worker, d.attempt, d.at, run_id, d.batch_id,
                  BatchState.COMMITTED.value) for d in current.dispatched])
            db.executemany(
                "INSERT OR REPLACE INTO attempts (run_id, batch_id, attempt, source, worker,"
                " bytes, n_files, queued_at) VALUES (?,?,?,?,?,?,?,?)",
                [(run_id, d.batch_id, d.attempt, d.source, d.worker, d.bytes, d.n_files, d.at)
                 for d in current.dispatched])
            for end in current.ended:  # after the dispatches: a batch may end in its own round
                self._end_attempt(db, run_id, end)
            for batch_id, reason in current.skipped:
                self._skip_batch(db, run_id, batch_id, reason)

    def _end_attempt(self, db: sqlite3.Connection, run_id: str, end: AttemptEnd) -> None:
        result = end.result
        db.execute(
            "UPDATE attempts SET ended_at=?, outcome=?, error=?, started_at=?, finished_at=?,"
            " rows_staged=?, rows_rejected=? WHERE run_id=? AND batch_id=? AND attempt=?",
            (end.at, end.outcome.value, bounded(end.error), result and result.started_at,
             result and result.finished_at, result and result.rows_staged,
             result and result.rows_rejected, run_id, end.batch_id, end.attempt))
        if result is not None:
            self._commit_batch(db, run_id, result)
        elif end.outcome in (AttemptOutcome.RETRIED, AttemptOutcome.FAILED):
            failed = end.outcome is AttemptOutcome.FAILED
            state = BatchState.FAILED if failed else BatchState.PENDING
            db.execute(
                "UPDATE batches SET state=?, last_error=?, error_kind=?, finished_at=?"
                " WHERE run_id=? AND batch_id=? AND state<>?",
                (state.value, bounded(end.error), end.kind and end.kind.value,
                 end.at if failed else None, run_id,
                 end.batch_id, BatchState.COMMITTED.value))
            if failed:
                db.execute("UPDATE files SET state=?, error=? WHERE run_id=? AND batch_id=?",
                           (FileState.FAILED.value, bounded(end.error), run_id, end.batch_id))

    @staticmethod
    def _skip_batch(db: sqlite3.Connection, run_id: str, batch_id: str, reason: str) -> None:
        db.execute("UPDATE batches SET state=?, last_error=?, worker=NULL WHERE run_id=?"
                   " AND batch_id=? AND state<>?",
                   (BatchState.SKIPPED.value, bounded(reason), run_id, batch_id,
                    BatchState.COMMITTED.value))
        db.execute("UPDATE files SET state=?, error=? WHERE run_id=? AND batch_id=?",
                   (FileState.SKIPPED.value, bounded(reason), run_id, batch_id))

    def requeue_all(self, run_id: str, batch_ids: list[str]) -> None:
        """Put unfinished batches back to pending (a stop, or a spent budget)."""
        with self.transaction() as db:
            db.execute("UPDATE attempts SET outcome=?, ended_at=? WHERE run_id=?"
                       " AND outcome IS NULL", (AttemptOutcome.ABANDONED.value, time.time(),
                                                run_id))
            db.executemany(
                "UPDATE batches SET state=?, worker=NULL WHERE run_id=? AND batch_id=?"
                " AND state NOT IN (?, ?, ?)",
                [(BatchState.PENDING.value, run_id, b, BatchState.COMMITTED.value,
                  BatchState.FAILED.value, BatchState.SKIPPED.value) for b in batch_ids])

    def attempts(self, run_id: str) -> dict[str, int]:
        rows = self.rows("SELECT batch_id, attempts FROM batches WHERE run_id=?", (run_id,))
        return {r["batch_id"]: r["attempts"] for r in rows}

    @staticmethod
    def _commit_batch(db: sqlite3.Connection, run_id: str, result: BatchResult) -> None:
        output, rejects = (result.written_file(result.output_path),
                           result.written_file(result.rejects_path))
        cursor = db.execute(
            "UPDATE batches SET state=?, rows_staged=?, rows_rejected=?, output_path=?,"
            " rejects_path=?, worker=?, started_at=?, finished_at=?, node=?, node_ip=?,"
            " output_size=?,"
            " output_checksum=?, rejects_size=?, rejects_checksum=?"
            " WHERE run_id=? AND batch_id=? AND state<>?",
            (BatchState.COMMITTED.value, result.rows_staged, result.rows_rejected,
             result.output_path, result.rejects_path, result.worker, result.started_at,
             result.finished_at, result.node, result.node_ip, output and output.size,
             output and output.checksum,
             rejects and rejects.size, rejects and rejects.checksum,
             run_id, result.batch_id, BatchState.COMMITTED.value),
        )
        if cursor.rowcount == 0:
            return
        db.executemany(
            "UPDATE files SET state=?, rows_staged=?, rows_rejected=?, error=?,"
            " warning=coalesce(?, warning), checksum=? WHERE run_id=? AND path=?",
            [(FileState.FAILED.value if f.error else FileState.COMMITTED.value,
              f.rows_staged, f.rows_rejected, bounded(f.error), bounded(f.warning), f.checksum,
              run_id, f.path)
             for f in result.files],
        )

    # -- reading ------------------------------------------------------------------------

    def run(self, run_id: str) -> RunRecord:
        found = self.rows("SELECT * FROM runs WHERE run_id=?", (run_id,))
        if not found:
            raise RunNotFoundError(f"no run {run_id!r} in {self.path.parent}")
        return _run_record(found[0])

    def latest_run_id(self, job: str | None = None) -> str:
        """The run recorded last (insertion order, whatever the clock said)."""
        sql = "SELECT run_id FROM runs {} " + _NEWEST_FIRST + " LIMIT 1"
        found = (self.rows(sql.format("WHERE job=?"), (job,)) if job
                 else self.rows(sql.format("")))
        if not found:
            raise RunNotFoundError(f"no runs yet in {self.path.parent}")
        return str(found[0]["run_id"])

    def last_success_time(self, job: str) -> float | None:
        """When the job's latest succeeded run (insertion order) finished, or None."""
        found = self.rows("SELECT finished_at FROM runs WHERE job=? AND state=? "
                          + _NEWEST_FIRST + " LIMIT 1", (job, RunState.SUCCEEDED.value))
        return found[0]["finished_at"] if found else None

    def run_ids(self, limit: int | None = None, job: str | None = None) -> list[str]:
        """Run ids (of one job, or all), the run recorded last first."""
        sql = "SELECT run_id FROM runs " + ("WHERE job=? " if job else "") + _NEWEST_FIRST
        rows = self.rows(sql + (f" LIMIT {int(limit)}" if limit else ""), (job,) if job else ())
        return [str(row["run_id"]) for row in rows]

    def latest_run_of_each_job(self) -> list[RunRecord]:
        """Each job's last recorded run, the run recorded last first."""
        latest: dict[str, RunRecord] = {}
        for row in self.rows("SELECT * FROM runs " + _NEWEST_FIRST):
            latest.setdefault(row["job"], _run_record(row))
        return list(latest.values())

    def served_files(self, job: str) -> list[ServedFile]:
        """Every source file the job's table serves, by path: for each path, the version
        committed by the job's latest run (insertion order) that committed it, among the
        runs since the job's latest succeeded `--full-refresh` run (which rebuilt the table
        from the files matched then: a file gone by then is no longer served)."""
        rows = self.rows(
            "SELECT * FROM (SELECT f.*, b.output_path, ROW_NUMBER() OVER (PARTITION BY f.path"
            " ORDER BY r.run_seq DESC, r.rowid DESC) AS newest FROM files f"
            " JOIN runs r ON r.run_id = f.run_id"
            " JOIN batches b ON b.run_id = f.run_id AND b.batch_id = f.batch_id"
            " WHERE r.job=? AND f.state=? AND b.state=?" + _SINCE_FULL_REFRESH + ")"
            " WHERE newest = 1 ORDER BY path",
            (job, FileState.COMMITTED.value, BatchState.COMMITTED.value))
        return [ServedFile(r["path"], r["run_id"], r["batch_id"], stored_fingerprint(r),
                           r["output_path"], r["rows_staged"], r["rows_rejected"],
                           r["checksum"])
                for r in rows]

    def serves_any(self, job: str) -> bool:
        """Whether any run of the job committed a file (its table serves something)."""
        return bool(self.rows(
            "SELECT 1 FROM files f JOIN runs r ON r.run_id = f.run_id WHERE r.job=?"
            " AND f.state=? LIMIT 1", (job, FileState.COMMITTED.value)))

    def verified_checksums(self, job: str) -> dict[str, tuple[int, int, str]]:
        """path → (size, mtime_ns, checksum) of the job's manifest (see `_SCHEMA`)."""
        return {r["path"]: (r["size"], r["mtime_ns"], r["checksum"]) for r in self.rows(
            "SELECT path, size, mtime_ns, checksum FROM manifest WHERE job=?", (job,))}

    def record_verified(self, job: str, verified: Iterable[tuple[str, int, int, str]]) -> None:
        """Keep (path, size, mtime_ns, checksum) of files a plan read, one row a path."""
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO manifest (job, path, size, mtime_ns, checksum)"
                " VALUES (?,?,?,?,?)", ((job, *entry) for entry in verified))

    _VERSIONS = (
        "WITH versions AS (SELECT f.run_id, f.batch_id, f.path, r.run_seq, r.rowid AS rid,"
        " ROW_NUMBER() OVER (PARTITION BY f.path ORDER BY r.run_seq DESC, r.rowid DESC)"
        " AS newest FROM files f JOIN runs r ON r.run_id = f.run_id"
        " JOIN batches b ON b.run_id = f.run_id AND b.batch_id = f.batch_id"
        " WHERE r.job=? AND f.state='committed' AND b.state='committed'"
        + _SINCE_FULL_REFRESH + "),"
        " serving AS (SELECT run_id, batch_id, sum(newest > 1) AS superseded FROM versions"
        " GROUP BY run_id, batch_id HAVING min(newest) = 1) ")
    """Every committed version of every path of a job (newest = 1: the one served), and
    the batches that serve at least one path."""

    def serving_batches(self, job: str) -> list[dict[str, Any]]:
        """The committed batches of a job's runs that serve at least one path of the job's
        table (see `served_files`), in run and batch order, with how many of their files
        a later version supersedes (`superseded`) and their run's unique-key rejects."""
        return self.rows(
            self._VERSIONS + "SELECT b.*, s.superseded, r.unique_path, r.unique_size,"
            " r.unique_checksum, r.config_json FROM serving s JOIN batches b"
            " ON b.run_id = s.run_id AND b.batch_id = s.batch_id"
            " JOIN runs r ON r.run_id = b.run_id ORDER BY r.run_seq, r.rowid, b.seq",
            (job,))

    def superseded_files(self, job: str) -> list[tuple[str, str, str]]:
        """(run_id, batch_id, path) of each file committed by a batch that serves other
        paths, whose path a later version supersedes: those rows are hidden."""
        return [(r["run_id"], r["batch_id"], r["path"]) for r in self.rows(
            self._VERSIONS + "SELECT v.run_id, v.batch_id, v.path FROM versions v JOIN serving s"
            " ON s.run_id = v.run_id AND s.batch_id = v.batch_id WHERE v.newest > 1"
            " ORDER BY v.run_id, v.batch_id, v.path", (job,))]

    def batches(self, run_id: str, state: BatchState | None = None) -> list[dict[str, Any]]:
        if state is None:
            return self.rows("SELECT * FROM batches WHERE run_id=? ORDER BY seq", (run_id,))
        return self.rows("SELECT * FROM batches WHERE run_id=? AND state=? ORDER BY seq",
                         (run_id, state.value))

    def fingerprints_by_batch(self, run_id: str, state: BatchState
                              ) -> dict[str, list[tuple[str, Fingerprint]]]:
        """The files of every batch in `state`, in path order, each with its planned
        fingerprint, in one read (a query per batch took 0.4 s for 200 batches of 50)."""
        grouped: dict[str, list[tuple[str, Fingerprint]]] = {}
        for row in self.rows(
                "SELECT f.batch_id, f.path, f.size, f.mtime_ns, f.sha256, f.dev, f.ino FROM"
                " files f JOIN batches b ON b.run_id = f.run_id AND b.batch_id = f.batch_id"
                " WHERE f.run_id=? AND b.state=? ORDER BY f.batch_id, f.path",
                (run_id, state.value)):
            fingerprint = stored_fingerprint(row)
            grouped.setdefault(row["batch_id"], []).append((row["path"], fingerprint))
        return grouped

    def files_of(self, run_id: str, batch_id: str) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM files WHERE run_id=? AND batch_id=? ORDER BY path",
                         (run_id, batch_id))

    def skipped_files(self, run_id: str) -> list[SkippedFile]:
        return [SkippedFile(**row) for row in self.rows(
            "SELECT path, batch_id, source, error AS reason FROM files WHERE run_id=? AND"
            " state=? ORDER BY path", (run_id, FileState.SKIPPED.value))]

    def attempt_rows(self, run_id: str) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM attempts WHERE run_id=? ORDER BY queued_at, batch_id",
                         (run_id,))

    def node_totals(self, run_id: str) -> list[dict[str, Any]]:
        """Per node that committed batches: node, node_ip, batches, rows_staged, bytes."""
        return self.rows(
            "SELECT node, node_ip, count(*) batches, coalesce(sum(rows_staged), 0) rows_staged,"
            " coalesce(sum(bytes), 0) bytes FROM batches WHERE run_id=? AND state=?"
            " AND node IS NOT NULL GROUP BY node, node_ip ORDER BY node_ip, node",
            (run_id, BatchState.COMMITTED.value))

    def committed_attempts_by_node(self, run_id: str) -> list[dict[str, Any]]:
        """Each committed attempt's node, node_ip, bytes, rows_staged, started_at and
        finished_at (in the worker)."""
        return self.rows(
            "SELECT b.node, b.node_ip, a.bytes, a.rows_staged, a.started_at, a.finished_at"
            " FROM attempts a JOIN batches b ON a.run_id=b.run_id AND a.batch_id=b.batch_id"
            " WHERE a.run_id=? AND a.outcome=? AND b.node IS NOT NULL",
            (run_id, AttemptOutcome.COMMITTED.value))

    def failed_files(self, run_id: str) -> list[FailedFile]:
        return [FailedFile(**row) for row in self.rows(
            "SELECT path, batch_id, error FROM files WHERE run_id=? AND state=? ORDER BY path",
            (run_id, FileState.FAILED.value))]

    def committed(self, run_id: str) -> Committed:
        files = self.committed_files(run_id)
        unique = [f.path for f in files if f.kind == "unique"]
        return Committed(
            outputs=[f.path for f in files if f.kind == "output"],
            rejects=[f.path for f in files if f.kind != "output"],
            unique=unique[0] if unique else None,
            sizes={f.path: f.size for f in files if f.size is not None}, run_id=run_id,
            storage=self._storage(run_id))

    def _storage(self, run_id: str) -> dict[str, Any] | None:
        """The run's `[storage]` table (None: no such run, or one planned before it existed)."""
        found = self.rows("SELECT config_json FROM runs WHERE run_id=?", (run_id,))
        return json.loads(found[0]["config_json"]).get("storage") if found else None

    def committed_files(self, run_id: str) -> list[CommittedFile]:
        """Every committed output of a run with its recorded size and checksum: batch
        outputs and rejects in batch order, then the run's unique-key rejects."""
        files = []
        for r in self.rows("SELECT * FROM batches WHERE run_id=? AND state=? ORDER BY seq",
                           (run_id, BatchState.COMMITTED.value)):
            files += [CommittedFile(kind, r[f"{kind}_path"], r[f"{kind}_size"],
                                    r[f"{kind}_checksum"], r["batch_id"])
                      for kind in ("output", "rejects") if r[f"{kind}_path"]]
        for r in self.rows("SELECT * FROM runs WHERE run_id=? AND unique_path IS NOT NULL",
                           (run_id,)):
            files.append(CommittedFile("unique", r["unique_path"], r["unique_size"],
                                       r["unique_checksum"]))
        return files

    def uncommit_batches(self, run_id: str, batch_ids: Iterable[str]) -> int:
        """Drop the commit records of batches whose output is lost or damaged: the batches
        and their files go back to pending (their rows are staged again, once)."""
        pending, committed = BatchState.PENDING.value, BatchState.COMMITTED.value
        with self.transaction() as db:
            changed = 0
            for batch_id in batch_ids:
                changed += db.execute(
                    "UPDATE batches SET state=?, rows_staged=NULL, rows_rejected=NULL,"
                    " output_path=NULL, rejects_path=NULL, output_size=NULL,"
                    " output_checksum=NULL, rejects_size=NULL, rejects_checksum=NULL,"
                    " worker=NULL, finished_at=NULL WHERE run_id=? AND batch_id=? AND state=?",
                    (pending, run_id, batch_id, committed)).rowcount
                db.execute(
                    "UPDATE files SET state=?, rows_staged=NULL, rows_rejected=NULL,"
                    " error=NULL, warning=NULL, rows_unique=0 WHERE run_id=? AND batch_id=?",
                    (FileState.PENDING.value, run_id, batch_id))
            return changed

    def warned_files(self, run_id: str) -> list[WarnedFile]:
        return [WarnedFile(**row) for row in self.rows(
            "SELECT path, batch_id, warning FROM files WHERE run_id=? AND warning IS NOT NULL"
            " ORDER BY path", (run_id,))]

    def record_unique(self, run_id: str, written: WrittenFile | None,
                      per_file: dict[str, int]) -> None:
        """Replace the run's unique-key rejects (recomputed whenever a run finishes)."""
        with self.transaction() as db:
            db.execute("UPDATE runs SET unique_path=?, unique_size=?, unique_checksum=?"
                       " WHERE run_id=?", (written and written.path, written and written.size,
                                          written and written.checksum, run_id))
            db.execute("UPDATE files SET rows_unique=0 WHERE run_id=?", (run_id,))
            db.executemany("UPDATE files SET rows_unique=? WHERE run_id=? AND path=?",
                           [(n, run_id, path) for path, n in per_file.items()])

    # -- housekeeping (batchrun clean) ------------------------------------------------

    def job_runs(self, job: str) -> list[RunRecord]:
        """The job's runs, the run recorded last first."""
        return [_run_record(r) for r in self.rows(
            "SELECT * FROM runs WHERE job=? " + _NEWEST_FIRST, (job,))]

    def jobs(self) -> list[str]:
        return [r["job"] for r in self.rows("SELECT DISTINCT job FROM runs ORDER BY job")]

    def forget_batches(self, keep: dict[str, set[str]]) -> None:
        """In one transaction, for each run (run id → the batch ids to keep): drop its other
        batches with their files and attempts (and its unique-key rejects when no batch is
        kept), and mark it cleaned. Its files are deleted after, then its row
        (`drop_cleaned_runs`): a kill in between leaves files no record references."""
        with self.transaction() as db:
            for run_id, batch_ids in keep.items():
                kept = json.dumps(sorted(batch_ids))
                for table in ("attempts", "files", "batches"):
                    db.execute(f"DELETE FROM {table} WHERE run_id=? AND batch_id NOT IN"
                               " (SELECT value FROM json_each(?))", (run_id, kept))
                db.execute("UPDATE runs SET cleaned_at=? WHERE run_id=?", (time.time(), run_id))
                if not batch_ids:
                    db.execute("UPDATE runs SET unique_path=NULL, unique_size=NULL,"
                               " unique_checksum=NULL WHERE run_id=?", (run_id,))

    def cleaned_runs(self, job: str) -> list[RunRecord]:
        """The job's runs `clean` dropped batches of (a kill may have left their files)."""
        return [_run_record(r) for r in self.rows(
            "SELECT * FROM runs WHERE job=? AND cleaned_at IS NOT NULL " + _NEWEST_FIRST, (job,))]

    def drop_cleaned_runs(self, job: str) -> list[str]:
        """Delete the rows of the job's cleaned runs that have no batch left; their ids."""
        with self.transaction() as db:
            return [r[0] for r in db.execute(
                "DELETE FROM runs WHERE job=? AND cleaned_at IS NOT NULL AND NOT EXISTS"
                " (SELECT 1 FROM batches b WHERE b.run_id = runs.run_id) RETURNING run_id",
                (job,)).fetchall()]

    def counts(self, run_id: str) -> RunCounts:
        """Batch, file and row totals of one run, in one read."""
        batch = self.rows(
            "SELECT count(*) total, sum(state='committed') committed, sum(state='failed')"
            " failed, sum(state='pending') pending, sum(state='running') running,"
            " sum(state='skipped') skipped,"
            " coalesce(sum(rows_staged),0) staged, coalesce(sum(attempts),0) attempts"
            " FROM batches WHERE run_id=?", (run_id,))[0]
        files = self.rows(
            "SELECT count(*) total, sum(state='committed') committed, sum(state='failed')"
            " failed, sum(state='skipped') skipped, coalesce(sum(size),0) bytes,"
            " coalesce(sum(CASE WHEN state='committed' THEN rows_rejected + rows_unique END),0)"
            " rejected, coalesce(sum(rows_unique),0) duplicates"
            " FROM files WHERE run_id=?", (run_id,))[0]
        return RunCounts(
            batches=BatchCounts(batch["total"], batch["committed"] or 0, batch["failed"] or 0,
                                batch["pending"] or 0, batch["running"] or 0,
                                batch["skipped"] or 0),
            files=FileCounts(files["total"], files["committed"] or 0, files["failed"] or 0,
                             files["skipped"] or 0),
            rows=RowCounts(batch["staged"] - files["duplicates"], files["rejected"]),
            bytes=files["bytes"], attempts=batch["attempts"])


def _make_state_dir(state_dir: Path) -> None:
    if state_dir.exists() and not state_dir.is_dir():
        raise EnvironmentProblem(f"state dir {state_dir} is not a directory")
    blocking = next((p for p in state_dir.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise EnvironmentProblem(f"state dir {state_dir} cannot be created: Not a directory"
                                 f" ({blocking} is a file)")
    try:
        private_dir(state_dir)
    except OSError as exc:
        reason = disk_full_reason(exc, state_dir)
        if reason:
            raise DiskFullError("state dir", str(state_dir), reason) from None
        raise EnvironmentProblem(f"state dir {state_dir} cannot be created: "
                                 f"{exc.strerror or exc}") from None


def _run_record(row: dict[str, Any]) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"], job=row["job"], table=row["table_name"],
        job_file=row["job_file"], staging_dir=row["staging_dir"],
        config=json.loads(row["config_json"]),
        schema=json.loads(row["schema_json"]) if row["schema_json"] else None,
        state=RunState(row["state"]), pid=row["pid"], host=row["host"],
        created_at=row["created_at"], started_at=row["started_at"],
        finished_at=row["finished_at"], message=row["message"],
        selection=_selection(row),
    )


def _selection_values(counts: PlanCounts | None) -> tuple[int | None, ...]:
    if counts is None:
        return (None,) * 5
    return (counts.new, counts.changed, counts.unchanged, counts.settling,
            int(counts.full_refresh))


def _selection(row: dict[str, Any]) -> PlanCounts | None:
    if row.get("files_new") is None:
        return None
    return PlanCounts(row["files_new"], row["files_changed"], row["files_unchanged"],
                      row["files_settling"], bool(row["full_refresh"]))
