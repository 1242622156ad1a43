"""Housekeeping: remove old runs and batchrun's own leftovers, never what is served or live.

A run is old when it is beyond the `keep` most recent runs of its job and (if an age is
given) older than it; a job's latest run is never old (`query` and `resume` start there).
An old run goes with its catalog rows, staged outputs, rejects, unique-key rejects and
log, except what the job's table still serves (jobtable.py): the batches serving a path
keep their outputs and rejects, the run its unique-key rejects, its row and its log, so
the table reads the same before and after.

Order, so a kill at any point leaves nothing the table serves missing: one catalog
transaction drops the old batches and marks their runs cleaned (`runs.cleaned_at`); then
the files no commit record references any more are deleted; then the rows of cleaned runs
with no batch left. Cleaning again finishes a killed clean: every cleaned run's files
that are not committed are deleted again.

A job is cleaned under its job lock, so no run of it is live meanwhile; a job whose lock
is held is left alone. Leftovers: a `.staging.duckdb.<pid>.tmp` (and `.wal`) publish file
of a dead process in a staging dir, and `batchrun-compare-<pid>-*` scratch folders in the
temporary dir of a dead `compare`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from batchrun import objectstore
from batchrun.catalog import Catalog
from batchrun.errors import RunActiveError
from batchrun.lock import JobLock, pid_alive, process_alive
from batchrun.logs import run_log_path
from batchrun.model import RunRecord
from batchrun.staging import STAGING_DB, _object_sizes, delete_output, staged_files

COMPARE_PREFIX = "batchrun-compare-"
"""The default scratch folder of `batchrun compare`: `batchrun-compare-<pid>-<random>`."""
_PID_NAMED = {
    "publish": re.compile(rf"\.{re.escape(STAGING_DB)}\.(\d+)\.tmp(?:\.wal)?"),
    "compare": re.compile(rf"{re.escape(COMPARE_PREFIX)}(\d+)-.+"),
}


@dataclass(frozen=True)
class Policy:
    keep: int | None = None
    """Keep the `keep` most recent runs of each job (at least its latest, always)."""
    older_than: float | None = None
    """Remove only runs created more than this many seconds ago."""

    def old(self, runs: list[RunRecord], now: float) -> list[RunRecord]:
        """The runs (newest first) this policy removes; none when it names no limit."""
        if self.keep is None and self.older_than is None:
            return []
        beyond = runs[max(self.keep or 1, 1):]  # a job's latest run (query, resume) stays
        return [r for r in beyond
                if self.older_than is None or r.created_at < now - self.older_than]


@dataclass(frozen=True)
class Removed:
    path: str
    size: int
    what: str


@dataclass
class CleanReport:
    dry_run: bool
    removed_runs: list[str] = field(default_factory=list)
    """Runs gone entirely (catalog rows, files, log)."""
    trimmed_runs: list[str] = field(default_factory=list)
    """Old runs kept only for the outputs the job's table serves."""
    busy: list[str] = field(default_factory=list)
    """Why a job was left alone (a live run holds its lock)."""
    removed: list[Removed] = field(default_factory=list)

    @property
    def freed(self) -> int:
        return sum(r.size for r in self.removed)


def clean(state_dir: Path, policy: Policy, dry_run: bool = False,
          now: float | None = None) -> CleanReport:
    """Remove old runs of every job in `state_dir` and batchrun's leftovers."""
    report = CleanReport(dry_run)
    now = time.time() if now is None else now
    with Catalog(state_dir, create=False) as catalog:
        staging_dirs = {r.staging_dir for job in catalog.jobs() for r in catalog.job_runs(job)}
        for job in catalog.jobs():
            try:
                with JobLock(state_dir, job).acquire("clean"):
                    _clean_job(catalog, state_dir, job, policy.old(catalog.job_runs(job), now),
                               report)
            except RunActiveError as busy:
                report.busy.append(str(busy))
    for staging in sorted(d for d in staging_dirs if not objectstore.is_object(d)):
        _remove_dead(Path(staging).glob(f".{STAGING_DB}.*.tmp*"), "publish", report)
    _remove_dead(Path(tempfile.gettempdir()).glob(f"{COMPARE_PREFIX}*"), "compare", report)
    return report


def _clean_job(catalog: Catalog, state_dir: Path, job: str, old: list[RunRecord],
               report: CleanReport) -> None:
    old = [r for r in old if not (r.state.is_active and process_alive(r.pid, r.host))]
    serving: dict[str, set[str]] = {r.run_id: set() for r in old}
    for row in catalog.serving_batches(job):
        if row["run_id"] in serving:
            serving[row["run_id"]].add(row["batch_id"])
    if not report.dry_run:
        catalog.forget_batches(serving)
    old += [r for r in catalog.cleaned_runs(job) if r.run_id not in serving]  # a killed clean's
    for run in old:
        kept = _kept_paths(catalog, run, serving.get(run.run_id))
        _remove_files(run, kept, report)
        if kept:
            report.trimmed_runs.append(run.run_id)
            continue
        log = run_log_path(state_dir, run.run_id)
        if log.is_file():
            _remove(str(log), log.stat().st_size, f"run {run.run_id}", None, report)
        report.removed_runs.append(run.run_id)
    if not report.dry_run:
        catalog.drop_cleaned_runs(job)


def _kept_paths(catalog: Catalog, run: RunRecord, serving: set[str] | None) -> set[str]:
    """The run's files that stay: those of its batches that serve the job's table, and its
    unique-key rejects with them (after `forget_batches`: what its commit records name)."""
    committed = catalog.committed(run.run_id)
    if serving is None:
        return committed.paths
    kept = {f.path for f in catalog.committed_files(run.run_id) if f.batch_id in serving}
    return kept | ({committed.unique} if committed.unique and serving else set())


def _remove_files(run: RunRecord, kept: set[str], report: CleanReport) -> None:
    storage = run.config.get("storage")
    doomed = [str(p) for p in staged_files(run.staging_dir, run.table, run.run_id, storage)
              if str(p) not in kept]
    sizes = _sizes(doomed, storage)
    for path in doomed:
        _remove(path, sizes.get(path, 0), f"run {run.run_id}", storage, report)


def _sizes(paths: list[str], storage: dict[str, object] | None) -> dict[str, int]:
    objects = [p for p in paths if objectstore.is_object(p)]
    sizes = _object_sizes(objects, storage) if objects else {}
    for path in paths:
        if not objectstore.is_object(path):
            try:
                sizes[path] = os.stat(path).st_size
            except FileNotFoundError:
                sizes[path] = 0
    return sizes


def _remove(path: str, size: int, what: str, storage: dict[str, object] | None,
            report: CleanReport) -> None:
    if not report.dry_run:
        delete_output(path, storage)
    report.removed.append(Removed(path, size, what))


def _remove_dead(found: Iterable[Path], kind: str, report: CleanReport) -> None:
    """Remove each leftover whose name holds the pid of a process no longer alive."""
    for path in sorted(found):
        match = _PID_NAMED[kind].fullmatch(path.name)
        if not match or pid_alive(int(match.group(1))):
            continue
        size = _tree_size(path)
        if not report.dry_run:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        report.removed.append(Removed(str(path), size, f"{kind} leftover"))




def _tree_size(path: Path) -> int:
    if not path.is_dir():
        return path.stat().st_size if path.exists() else 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
