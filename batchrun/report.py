"""Run status as plain data: what `status --json`, `runs --json` and `run --json` print."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from batchrun.catalog import Catalog
from batchrun.lock import process_alive
from batchrun.model import RunRecord, RunState


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat() if ts else None


def effective_state(run: RunRecord) -> RunState:
    """A run recorded as active whose driver is gone was interrupted (killed)."""
    if run.state.is_active and not process_alive(run.pid, run.host):
        return RunState.INTERRUPTED
    return run.state


def run_status(catalog: Catalog, run_id: str, detail: bool = False) -> dict[str, Any]:
    run = catalog.run(run_id)
    counts = catalog.counts(run_id)
    status: dict[str, Any] = {
        "run_id": run.run_id, "job": run.job, "table": run.table,
        "state": effective_state(run).value,
        "batches": {"total": counts["batches_total"], "committed": counts["batches_committed"],
                    "failed": counts["batches_failed"], "pending": counts["batches_pending"],
                    "running": counts["batches_running"], "skipped": counts["batches_skipped"]},
        "files": {"total": counts["files_total"], "committed": counts["files_committed"],
                  "failed": counts["files_failed"], "skipped": counts["files_skipped"]},
        "rows": {"staged": counts["rows_staged"], "rejected": counts["rows_rejected"]},
        "bytes": counts["bytes_total"], "attempts": counts["attempts"],
        "started_at": iso(run.started_at), "finished_at": iso(run.finished_at),
        "duration_s": _duration(run, effective_state(run)), "pid": run.pid, "host": run.host,
        "job_file": run.job_file, "staging_dir": run.staging_dir, "message": run.message,
    }
    if detail:
        status["failed_files"] = catalog.failed_files(run_id)
        status["skipped_files"] = catalog.skipped_files(run_id)
        status["warnings"] = catalog.warned_files(run_id)
        batches = catalog.batches(run_id)
        keys = ("batch_id", "state", "attempts", "last_error", "error_kind")
        status["failed_batches"] = [{k: b[k] for k in keys} for b in batches
                                    if b["state"] == "failed"]
        status["retried_batches"] = [{k: b[k] for k in keys} for b in batches
                                     if b["attempts"] > 1 or (b["last_error"] and b["state"]
                                                              not in ("failed", "skipped"))]
    return status


def _duration(run: RunRecord, state: RunState) -> float | None:
    """Seconds from start to finish (or to now while running); unknown if it was killed."""
    if not run.started_at or (state is RunState.INTERRUPTED and not run.finished_at):
        return None
    end = run.finished_at if run.finished_at and not run.state.is_active else None
    return round((end or time.time()) - run.started_at, 3)


def runs_status(catalog: Catalog, limit: int | None = None) -> list[dict[str, Any]]:
    return [run_status(catalog, run_id) for run_id in catalog.run_ids(limit)]


def resumable_runs(catalog: Catalog) -> list[RunRecord]:
    """What `resume` without a run id may pick: each job's latest run, if it failed or was
    interrupted (a run with a live driver is not resumable now). A job's older runs are
    superseded by its latest one. The run recorded last comes first."""
    unfinished = (RunState.FAILED, RunState.INTERRUPTED)
    return [run for run in catalog.latest_run_of_each_job() if effective_state(run) in unfinished]
