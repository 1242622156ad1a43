"""Running a planned run, stage by stage, once `start.py` has planned it (or loaded it).

    resume_planned   (a resume) [repair] ─► reconcile disk and catalog ─► plan again the
                     quarantined files that may have recovered ─► execute_run
    execute_run      run state RUNNING ─► connect to Ray (unless start did) ─► schedule
                     the pending batches (scheduler.py: dispatch, retries, commits) ─►
                     publish: unique keys, orphans, staging.duckdb ─► the final state
                     (succeeded / failed / interrupted) and its one-line message

Every limit comes from the run's `ExecutionSettings` (settings.py), resolved once by
start.py; this module never reads `[execution]` itself. A run that aborts is marked
failed with a one-line reason; a local Ray this run started is shut down.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
from loguru import logger

from batchrun import logs
from batchrun.catalog import Catalog
from batchrun.config import ColumnSpec, JobConfig
from batchrun.errors import BatchrunError, DiskFullError, StagingError, disk_full_reason
from batchrun.execution.admission import QueuedBatch
from batchrun.execution.pool import InlinePool, NotingFirstSubmit, WorkerPool
from batchrun.execution.scheduler import (
    Limits,
    ProgressCallback,
    ScheduleOutcome,
    Scheduler,
    pending_batches,
)
from batchrun.execution.settings import (
    ExecutionSettings,
    Pool,
    PoolChoice,
    choose_pool,
    inline_settings,
    ray_connected,
)
from batchrun.execution.stopping import StopToken
from batchrun.hooks import NO_HOOKS, Hooks
from batchrun.jobtable import job_table, publish_job_table
from batchrun.keyfeed import KeyFeed
from batchrun.model import BatchState, RowCounts, RunRecord, RunState
from batchrun.pipeline import BatchPipeline, PipelineSpec
from batchrun.plan import Reach, replan_recoverable
from batchrun.redact import redact, redact_message
from batchrun.staging import check_committed_files, delete_output, remove_orphans
from batchrun.unique import apply_unique_keys
from batchrun.verify import VerifyReport, verify_run

if TYPE_CHECKING:
    from batchrun.execution.ray_session import RayReady


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    state: RunState
    resumed: bool
    already_done: bool = False
    schedule: ScheduleOutcome | None = None
    repaired: VerifyReport | None = None
    """What `resume --repair` found before it re-dispatched the damaged batches."""
    pool: PoolChoice | None = None
    """Where its batches ran (None: there was nothing to dispatch)."""


def resume_planned(catalog: Catalog, record: RunRecord, config: JobConfig,
                   columns: dict[str, ColumnSpec], settings: ExecutionSettings,
                   stop: StopToken | None, on_progress: ProgressCallback | None, *, hooks: Hooks,
                   repair: bool = False, retry_quarantined: bool = False) -> RunOutcome:
    """Resume a run: repair it first when asked (a succeeded run too), reconcile, plan
    again the quarantined files that may have recovered (all of them with
    `retry_quarantined`), execute."""
    sink = logs.open_run_log(Path(catalog.path.parent), record.run_id)
    try:
        repaired = repair_run(catalog, record) if repair else None
        if repaired is not None and repaired.ok and record.state is RunState.SUCCEEDED:
            return RunOutcome(record.run_id, record.state, resumed=True, already_done=True,
                              repaired=repaired)
        reconcile(catalog, record)
        _replan_recoverable(catalog, record, config, retry_quarantined)
    finally:
        logs.close_run_log(sink)
    outcome = execute_run(catalog, record, config, columns, settings, stop, on_progress,
                          resumed=True, hooks=hooks)
    return replace(outcome, repaired=repaired)


def _replan_recoverable(catalog: Catalog, record: RunRecord, config: JobConfig,
                        every: bool = False) -> None:
    """Quarantined files whose failure may have gone away (missing, denied, I/O, changed)
    go into new batches of the run; the run log says which (see plan.replan_recoverable)."""
    reach = Reach(tuple(config.source.paths), Path(record.job_file).parent,
                  (Path(record.staging_dir), catalog.path.parent))
    notes = replan_recoverable(catalog, record.run_id, config, reach, every)
    log = logger.bind(run_id=record.run_id)
    for note in notes:
        log.warning(note)
    if notes:
        log.info("resume: {} quarantined file(s) looked at again", len(notes))


def repair_run(catalog: Catalog, record: RunRecord) -> VerifyReport:
    """Verify every committed output; drop the commit record of each batch with a missing
    or damaged file (the batch goes back to pending and is staged again, once) and delete
    the damaged file. A damaged unique-key rejects file is forgotten: publishing
    recomputes it."""
    report = verify_run(catalog, record.run_id)
    bad = report.bad
    catalog.uncommit_batches(record.run_id, sorted({f.file.batch_id for f in bad
                                                    if f.file.batch_id}))
    if any(f.file.kind == "unique" for f in bad):
        catalog.record_unique(record.run_id, None, {})
    for finding in bad:
        delete_output(finding.file.path, record.config.get("storage"))
        logger.bind(run_id=record.run_id, batch_id=finding.file.batch_id or "-",
                    file=finding.file.path).warning("repair: {}", finding.line())
    return report


def reconcile(catalog: Catalog, record: RunRecord) -> None:
    """Refuse to go on when a committed output is missing or has the wrong size (`resume
    --repair` stages its batch again); remove uncommitted outputs; put running and failed
    batches back to pending."""
    check_committed_files(catalog.committed(record.run_id))
    removed = remove_orphans(record.staging_dir, record.table, record.run_id,
                             catalog.committed(record.run_id).paths, record.config.get("storage"))
    reset = catalog.reset_unfinished_batches(record.run_id)
    logger.bind(run_id=record.run_id).info(
        "reconciled: removed {} uncommitted file(s), {} batch(es) back to pending", removed, reset)


def execute_run(catalog: Catalog, record: RunRecord, config: JobConfig,
                columns: dict[str, ColumnSpec], settings: ExecutionSettings,
                stop: StopToken | None, on_progress: ProgressCallback | None, resumed: bool,
                ray_ready: RayReady | None = None, *, hooks: Hooks,
                choice: PoolChoice | None = None) -> RunOutcome:
    """Schedule the run's pending batches on a worker pool (`choice`, else `choose_pool`
    for the pending bytes: Ray actors, or this process), publish, record the outcome.
    `hooks`: the run's hooks (its faults), loaded once at its start."""
    sink = logs.open_run_log(Path(catalog.path.parent), record.run_id)
    log = logger.bind(run_id=record.run_id)
    stop = stop or StopToken()
    feed: KeyFeed | None = None
    try:
        catalog.set_run_state(record.run_id, RunState.RUNNING, pid=os.getpid(),
                              host=socket.gethostname(),
                              since=None if resumed else record.created_at)
        log.info("{} job {} ({})", "resuming" if resumed else "starting", record.job,
                 record.job_file)
        pending = pending_batches(catalog, record.run_id)
        feed = KeyFeed.start(catalog, record, columns)
        if pending or ray_ready is not None:
            choice = choice or _choice(settings, pending, hooks, ray_ready)
            log.info("pool: {} ({})", choice.pool, choice.reason)
            if choice.pool == "ray":
                ray_ready = ray_ready or connect(settings, config, Path(record.job_file).parent)
                _note_connected(record.run_id, ray_ready, on_progress)
            outcome = _schedule(catalog, record, choice.pool, _worker_spec(
                record, config, columns, settings, hooks), settings, hooks, stop, on_progress,
                pending, feed)
        else:  # a resume with nothing left to dispatch: Ray is not started for nothing
            log.info("no batch to dispatch: Ray not started")
            outcome = ScheduleOutcome()
        _publish(catalog, record, columns, feed)
        state, message = _final_state(catalog, record.run_id, outcome, config)
        catalog.set_run_state(record.run_id, state, message=redact_message(message))
        _publish_rebuilt(catalog, record, columns, state)
        _raise_if_staging_full(catalog, record)
        log.info("run {}: {} batch(es) committed, {} failed, {} abandoned; catalog writes took"
                 " {:.3f}s", state.value, outcome.committed, outcome.failed, outcome.abandoned,
                 outcome.catalog_s)
        return RunOutcome(record.run_id, state, resumed=resumed, schedule=outcome, pool=choice)
    except BaseException as exc:
        _record_abort(catalog, record.run_id, exc)
        raise
    finally:
        if feed is not None:
            feed.close()
        stop.restore()
        if ray_ready is not None and ray_ready.started:
            from batchrun.execution.ray_session import shutdown_local

            shutdown_local()
        logs.close_run_log(sink)


def _choice(settings: ExecutionSettings, pending: list[QueuedBatch], hooks: Hooks,
            ray_ready: RayReady | None) -> PoolChoice:
    """The pool of a run that start.py did not choose for: Ray when it is up already."""
    if ray_ready is not None:
        return PoolChoice("ray", "Ray was started while the run was planned")
    return choose_pool(settings, sum(b.bytes for b in pending), ray_connected=ray_connected(),
                       hooked=hooks is not NO_HOOKS)


def _schedule(catalog: Catalog, record: RunRecord, pool_kind: Pool, spec: PipelineSpec,
              settings: ExecutionSettings, hooks: Hooks, stop: StopToken,
              on_progress: ProgressCallback | None, pending: list[QueuedBatch],
              feed: KeyFeed | None = None) -> ScheduleOutcome:
    """Run the pending batches on the chosen pool; SIGINT/SIGTERM stop it from now on."""
    if pool_kind == "inline":
        settings = inline_settings(settings)
        spec = replace(spec, threads=settings.threads_per_worker)
        pool = _inline_pool(spec, on_progress, stop)
    else:
        pool = _ray_pool(spec)
    stop.install()
    scheduler = Scheduler(catalog, record.run_id, NotingFirstSubmit(pool, _first_dispatch(
        record.run_id)), _limits(settings), hooks=hooks, stop=stop, on_progress=on_progress,
        on_commit=feed.committed if feed else None)
    return scheduler.execute(pending, catalog.attempts(record.run_id))


def connect(settings: ExecutionSettings, config: JobConfig, base_dir: Path) -> RayReady:
    """Start or join Ray (imported only now: a run on the inline pool never loads it)."""
    from batchrun.execution.ray_session import connect_ray

    return connect_ray(settings, config, base_dir)


def _ray_pool(spec: PipelineSpec) -> WorkerPool:
    from batchrun.execution.ray_pool import RayActorPool

    return RayActorPool(spec, ACTOR_OPTIONS)


INLINE_NODE = "inline"
"""The node an inline run's batches record (where a Ray run records its node's id), so
that `status` and `report` say where they ran."""


def _inline_pool(spec: PipelineSpec, on_progress: ProgressCallback | None,
                 stop: StopToken) -> WorkerPool:
    """The batches run in this process, one at a time: partition k is worker k's, as an
    actor's would be (and replacements are not needed: a batch that kills this process
    kills the run, and the resume reconciles it)."""
    if on_progress:
        on_progress({"stage": "pool", "pool": "inline", "threads": spec.threads})
    return InlinePool(lambda k: BatchPipeline(k, spec, node=INLINE_NODE).process, stop=stop)


def _first_dispatch(run_id: str) -> Any:
    """Log how long after the command started the first batch went out."""
    def note() -> None:
        logger.bind(run_id=run_id).info("first batch dispatched {:.2f}s after the process"
                                        " started", process_age())
    return note


def process_age() -> float:
    """Seconds since this process started: from Linux's clock ticks (/proc, 10 ms), else
    psutil's start time (whose boot time may be a second off)."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            started = int(stat.read().rpartition(")")[2].split()[19])  # field 22: starttime
            return float(uptime.read().split()[0]) - started / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        import psutil

        return time.time() - psutil.Process().create_time()


def _note_connected(run_id: str, ray_ready: RayReady, on_progress: ProgressCallback | None
                    ) -> None:
    """Log where the run's Ray is, and tell the progress display."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 0)
    logger.bind(run_id=run_id).info("connected to Ray at {} ({} CPUs) in {:.2f}s",
                                    ray_ready.address, cpus, ray_ready.seconds)
    if on_progress:
        on_progress({"stage": "ray", "address": redact(str(ray_ready.address)), "cpus": cpus,
                     "seconds": ray_ready.seconds, "started": ray_ready.started})


def _record_abort(catalog: Catalog, run_id: str, exc: BaseException) -> None:
    """Mark the run failed with a one-line reason; the traceback goes to the run log only."""
    log = logger.bind(run_id=run_id)
    log.opt(exception=exc).error("run aborted")
    state, message = abort_state(exc)
    try:
        catalog.set_run_state(run_id, state, message=message)
    except BatchrunError as problem:  # e.g. the state dir is full too: the first error wins
        log.error("could not record the failure: {}", problem)


def abort_state(exc: BaseException) -> tuple[RunState, str]:
    """The state and one-line message of a run stopped by `exc` before its scheduler could
    drain it: a Ctrl-C (e.g. while Ray starts) leaves it interrupted, like a Ctrl-C later
    on; anything else, failed."""
    if isinstance(exc, KeyboardInterrupt):
        return RunState.INTERRUPTED, "stopped by Ctrl-C before its batches were dispatched"
    message = str(exc) if isinstance(exc, BatchrunError) else f"{type(exc).__name__}: {exc}"
    return RunState.FAILED, redact(message)


def _final_state(catalog: Catalog, run_id: str, outcome: ScheduleOutcome,
                 config: JobConfig) -> tuple[RunState, str | None]:
    """The run's state and its one-line message. Besides failed, skipped or pending work,
    a run fails when it read rows and staged none, or rejected more than
    `validation.max_run_reject_ratio` of them."""
    if outcome.stopped_by is not None:
        return RunState.INTERRUPTED, _message(outcome)
    counts = catalog.counts(run_id)
    verdict = _reject_verdict(counts.rows, config.validation.max_run_reject_ratio)
    if counts.unfinished or verdict:
        message = "; ".join(m for m in (_message(outcome), verdict) if m)
        return RunState.FAILED, message or None
    return RunState.SUCCEEDED, _message(outcome)


def _reject_verdict(rows: RowCounts, max_ratio: float) -> str | None:
    """Why the run's rejects alone fail it, or None."""
    staged, rejected = rows.staged, rows.rejected
    total = staged + rejected
    if total and not staged:
        return f"no rows staged: all {rejected} rows rejected"
    if total and rejected / total > max_ratio:
        return (f"{rejected} of {total} rows rejected ({rejected / total:.2%}), more than"
                f" validation.max_run_reject_ratio = {max_ratio}")
    return None


def _message(outcome: ScheduleOutcome) -> str | None:
    if outcome.stopped_by is not None:
        return f"stopped by signal {outcome.stopped_by}; {outcome.abandoned} batch(es) abandoned"
    if outcome.stopped_because:
        return f"stopped dispatching: {outcome.stopped_because}"
    if outcome.skipped:
        return f"{outcome.skipped} batch(es) skipped: a source's circuit breaker stayed open"
    return None


def _raise_if_staging_full(catalog: Catalog, record: RunRecord) -> None:
    """A batch that failed because the staging dir is full makes the run an environment
    problem (exit 4), not a data problem: free space, then resume."""
    for batch in catalog.batches(record.run_id, BatchState.FAILED):
        reason = disk_full_reason(batch["last_error"] or "", record.staging_dir)
        if reason:
            raise DiskFullError("staging dir", record.staging_dir, reason)


def _limits(settings: ExecutionSettings) -> Limits:
    return Limits(workers=settings.workers, controls=settings.controls(),
                  max_retries=settings.max_retries, retry_budget=settings.retry_budget,
                  drain_timeout=settings.drain_timeout, batch_timeout=settings.batch_timeout,
                  max_failed_files=settings.max_failed_files)


def _publish(catalog: Catalog, record: RunRecord, columns: dict[str, ColumnSpec],
             feed: KeyFeed | None = None) -> None:
    """The unique pass (over the candidates of `feed`, the run's key index), orphan
    removal and `staging.duckdb` (the job's table, whichever run of the job this is: see
    jobtable.py); a full staging dir or a DuckDB failure here becomes one error naming
    the staging dir."""
    began = time.monotonic()
    staging = record.staging_dir
    committed = catalog.committed(record.run_id)
    check_committed_files(committed, committed.outputs)  # the unique pass reads them
    try:
        apply_unique_keys(catalog, record, columns, _rebuilds(catalog, record.run_id), feed)
        committed = catalog.committed(record.run_id)
        remove_orphans(staging, record.table, record.run_id, committed.paths, committed.storage)
        publish_job_table(staging, job_table(catalog, record,
                                             {n: s.type for n, s in columns.items()}))
    except (duckdb.Error, OSError) as exc:
        raise _staging_error(exc, staging) from None
    logger.bind(run_id=record.run_id).info("published in {:.2f}s", time.monotonic() - began)


def _staging_error(exc: Exception, staging: str) -> BatchrunError:
    reason = disk_full_reason(exc, staging)
    if reason:
        return DiskFullError("staging dir", str(staging), reason)
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return StagingError(f"cannot publish staging dir {staging}: {type(exc).__name__}:"
                        f" {first_line}")


def _rebuilds(catalog: Catalog, run_id: str) -> bool:
    """Whether the run is a full refresh that will rebuild the job's table once it ends:
    no settling file held back, no batch unfinished (see `Catalog.served_files`)."""
    selection = catalog.run(run_id).selection
    return (selection is not None and selection.full_refresh and not selection.settling
            and not catalog.counts(run_id).unfinished)


def _publish_rebuilt(catalog: Catalog, record: RunRecord, columns: dict[str, ColumnSpec],
                     state: RunState) -> None:
    """A full refresh rebuilds the job's table only once it has succeeded (see
    `Catalog.served_files`): `staging.duckdb`, published before, is published again so
    it drops what `query` drops (files gone from the source)."""
    run = catalog.run(record.run_id)
    if state is not RunState.SUCCEEDED or run.selection is None or not run.selection.full_refresh:
        return
    try:
        publish_job_table(record.staging_dir, job_table(catalog, record,
                                                        {n: s.type for n, s in columns.items()}))
    except (duckdb.Error, OSError) as exc:
        raise _staging_error(exc, record.staging_dir) from None


ACTOR_OPTIONS = {"num_cpus": 1, "max_restarts": 0, "max_task_retries": 0}


def _worker_spec(record: RunRecord, config: JobConfig, columns: dict[str, ColumnSpec],
                 settings: ExecutionSettings, hooks: Hooks) -> PipelineSpec:
    return PipelineSpec(
        run_id=record.run_id, table=record.table, staging_dir=record.staging_dir,
        fmt=config.source.format, csv=config.source.csv, columns=columns,
        max_file_bytes=config.source.max_file_bytes,
        validation=config.validation,
        threads=settings.threads_per_worker,
        reader=config.source.reader,
        transform=config.transform.function if config.transform else None,
        code_dirs=(str(Path(record.job_file).parent),),
        hooks=hooks, storage=record.config.get("storage"))
