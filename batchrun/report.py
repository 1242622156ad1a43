"""Run status as a typed record: what `status --json`, `runs --json` and `run --json` print.

`RunStatus.as_json()` is the JSON contract (keys, values and their order); the CLI's text
renderers read the same record.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from batchrun.catalog import Catalog
from batchrun.lock import process_alive
from batchrun.model import (
    BatchNote,
    BatchState,
    ErrorKind,
    FailedFile,
    PlanCounts,
    RunCounts,
    RunRecord,
    RunState,
    SkippedFile,
    WarnedFile,
)

if TYPE_CHECKING:
    from batchrun.metrics import RunMetrics
    from batchrun.rejects import RejectReason


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts else None


def node_label(node_id: str | None, node_ip: str | None) -> str | None:
    """A node as people read it: its IP and the start of its Ray node id (two nodes of
    one machine share an IP): `10.0.0.7 (3f9a1c2e)`."""
    if node_id is None:
        return node_ip
    return f"{node_ip} ({node_id[:8]})" if node_ip else node_id[:8]


@dataclass(frozen=True)
class NodeShare:
    """What one node committed in a run."""

    node: str
    """`node_label`."""
    node_id: str
    node_ip: str | None
    batches: int
    rows_staged: int
    bytes: int


def node_shares(catalog: Catalog, run_id: str) -> tuple[NodeShare, ...]:
    return tuple(NodeShare(node_label(r["node"], r["node_ip"]) or "", r["node"], r["node_ip"],
                           r["batches"], r["rows_staged"], r["bytes"])
                 for r in catalog.node_totals(run_id))


@dataclass(frozen=True)
class StatusDetail:
    """What `status` lists line by line: files and batches that need a look."""

    failed_files: tuple[FailedFile, ...] = ()
    skipped_files: tuple[SkippedFile, ...] = ()
    warnings: tuple[WarnedFile, ...] = ()
    failed_batches: tuple[BatchNote, ...] = ()
    retried_batches: tuple[BatchNote, ...] = ()
    nodes: tuple[NodeShare, ...] = ()
    """Where the committed batches ran, node by node."""

    def as_json(self) -> dict[str, Any]:
        return {"failed_files": [asdict(f) for f in self.failed_files],
                "skipped_files": [asdict(f) for f in self.skipped_files],
                "warnings": [asdict(f) for f in self.warnings],
                "failed_batches": [b.as_json() for b in self.failed_batches],
                "retried_batches": [b.as_json() for b in self.retried_batches],
                "nodes": [asdict(n) for n in self.nodes]}


@dataclass(frozen=True)
class RunStatus:
    """One run: its record, its counts, and (for `status`) the lines worth a look."""

    run_id: str
    job: str
    table: str
    state: RunState
    """The effective state: a run recorded as active whose driver is gone is interrupted."""
    counts: RunCounts
    started_at: float | None
    finished_at: float | None
    duration_s: float | None
    pid: int | None
    host: str | None
    job_file: str
    staging_dir: str
    message: str | None
    detail: StatusDetail | None = None
    """Only with `detail=True` (status, run, resume); `runs` leaves it out."""
    selection: PlanCounts | None = None
    """How its plan classified the matched files (None: planned before batchrun did)."""

    def as_json(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "run_id": self.run_id, "job": self.job, "table": self.table,
            "state": self.state.value, "batches": self.counts.batches.as_json(),
            "files": self.counts.files.as_json(), "rows": self.counts.rows.as_json(),
            "bytes": self.counts.bytes, "attempts": self.counts.attempts,
            "started_at": iso(self.started_at), "finished_at": iso(self.finished_at),
            "duration_s": self.duration_s, "pid": self.pid, "host": self.host,
            "job_file": self.job_file, "staging_dir": self.staging_dir, "message": self.message,
        }
        if self.selection is not None:  # runs planned before incremental planning: absent
            status["incremental"] = self.selection.as_json()
        if self.detail is not None:
            status.update(self.detail.as_json())
        return status


def effective_state(run: RunRecord) -> RunState:
    """A run recorded as active whose driver is gone was interrupted (killed)."""
    if run.state.is_active and not process_alive(run.pid, run.host):
        return RunState.INTERRUPTED
    return run.state


def run_status(catalog: Catalog, run_id: str, detail: bool = False) -> RunStatus:
    run = catalog.run(run_id)
    state = effective_state(run)
    return RunStatus(
        run_id=run.run_id, job=run.job, table=run.table, state=state,
        counts=catalog.counts(run_id), started_at=run.started_at, finished_at=run.finished_at,
        duration_s=_duration(run, state), pid=run.pid, host=run.host, job_file=run.job_file,
        staging_dir=run.staging_dir, message=run.message,
        detail=status_detail(catalog, run_id) if detail else None, selection=run.selection)


def status_detail(catalog: Catalog, run_id: str) -> StatusDetail:
    notes = [_note(b) for b in catalog.batches(run_id)]
    return StatusDetail(
        failed_files=tuple(catalog.failed_files(run_id)),
        skipped_files=tuple(catalog.skipped_files(run_id)),
        warnings=tuple(catalog.warned_files(run_id)),
        failed_batches=tuple(n for n in notes if n.state is BatchState.FAILED),
        retried_batches=tuple(n for n in notes if n.attempts > 1 or (
            n.last_error and n.state not in (BatchState.FAILED, BatchState.SKIPPED))),
        nodes=node_shares(catalog, run_id))


def _note(row: dict[str, Any]) -> BatchNote:
    kind = row["error_kind"]
    return BatchNote(row["batch_id"], BatchState(row["state"]), row["attempts"],
                     row["last_error"], ErrorKind(kind) if kind else None,
                     node_label(row["node"], row["node_ip"]))


def _duration(run: RunRecord, state: RunState) -> float | None:
    """Seconds from start to finish (or to now while running); unknown if it was killed."""
    if not run.started_at or (state is RunState.INTERRUPTED and not run.finished_at):
        return None
    end = run.finished_at if run.finished_at and not run.state.is_active else None
    return round((end or time.time()) - run.started_at, 3)


def runs_status(catalog: Catalog, limit: int | None = None, job: str | None = None
                ) -> list[RunStatus]:
    return [run_status(catalog, run_id) for run_id in catalog.run_ids(limit, job)]


def resumable_runs(catalog: Catalog) -> list[RunRecord]:
    """What `resume` without a run id may pick: each job's latest run, if it failed or was
    interrupted (a run with a live driver is not resumable now). A job's older runs are
    superseded by its latest one. The run recorded last comes first."""
    unfinished = (RunState.FAILED, RunState.INTERRUPTED)
    return [run for run in catalog.latest_run_of_each_job() if effective_state(run) in unfinished]


@dataclass(frozen=True)
class RunReport:
    """What `batchrun report` shows: the run's metrics, why rows were rejected (the top
    rule and column pairs, with example lines), which files were quarantined and why, and
    for `report --html` the committed batches' latencies and commit times."""

    metrics: RunMetrics
    reject_reasons: tuple[RejectReason, ...]
    quarantined: tuple[FailedFile, ...]
    latencies: tuple[float, ...] = ()
    """Seconds from dispatch to commit of every committed batch."""
    commits: tuple[tuple[float, int, int], ...] = ()
    """(seconds since the first dispatch, input bytes, rows staged) of every commit."""
    reasons_error: str | None = None
    """Why the reject reasons could not be read (a committed rejects file missing or
    damaged): the rest of the report still shows."""

    def as_json(self) -> dict[str, Any]:
        return {**self.metrics.as_json(),
                "reject_reasons": [r.as_json() for r in self.reject_reasons],
                "reject_reasons_error": self.reasons_error,
                "quarantined_files": [asdict(f) for f in self.quarantined]}


def run_report(catalog: Catalog, run_id: str, top: int = 10) -> RunReport:
    from batchrun.metrics import commit_series, run_metrics

    metrics = run_metrics(catalog, run_id)
    reasons, problem = _reject_reasons(catalog, run_id, top) if metrics.rows.rejected else ([], None)
    latencies, commits = commit_series(catalog.attempt_rows(run_id))
    return RunReport(metrics, tuple(reasons), tuple(catalog.failed_files(run_id)),
                     latencies, commits, problem)


def _reject_reasons(catalog: Catalog, run_id: str, top: int) -> tuple[list[RejectReason], str | None]:
    from batchrun.errors import EnvironmentProblem
    from batchrun.rejects import RunRejects

    try:
        return RunRejects(catalog, run_id).reasons(top), None
    except EnvironmentProblem as exc:
        return [], str(exc)
