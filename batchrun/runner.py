"""The library API: start a run, resume a run. The CLI is a thin shell over these.

    start_run(job, state_dir)   plan → catalog → Ray → schedule → publish views
    resume_run(run_id, ...)     reconcile disk and catalog → schedule what is left

Both hold the job's lock for their whole life, so one job never runs twice at once.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import ray
from loguru import logger

from batchrun import logs
from batchrun.admission import Controls, QueuedBatch
from batchrun.catalog import Catalog, RunRecord
from batchrun.config import ColumnSpec, Job, JobConfig, set_dotted, validate_config
from batchrun.driver import Limits, ProgressCallback, ScheduleOutcome, Scheduler, StopToken
from batchrun.errors import EnvironmentProblem
from batchrun.faults import Faults, load_faults
from batchrun.lock import JobLock
from batchrun.plan import cut_batches, expand_sources
from batchrun.plugins import resolve
from batchrun.ray_session import RayReady, connect_ray
from batchrun.read import infer_schema, type_name
from batchrun.staging import publish_staging_db, remove_orphans
from batchrun.states import BatchState, RunState
from batchrun.unique import apply_unique_keys
from batchrun.worker import WorkerSpec

DEFAULT_MEMORY_SHARE = 8
"""max_bytes_in_flight defaults to 1/8 of the memory available at start: a batch's Arrow
tables take several times its input bytes while it is parsed, checked and written."""


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    state: RunState
    resumed: bool
    already_done: bool = False
    schedule: ScheduleOutcome | None = None


def new_run_id() -> str:
    return f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def start_run(job: Job, state_dir: Path, stop: StopToken | None = None,
              on_progress: ProgressCallback | None = None,
              on_planned: ProgressCallback | None = None) -> RunOutcome:
    """Plan the job and write the plan to the catalog, then execute it.

    Planning (listing and fingerprinting the files, the catalog's plan transaction) runs
    in a helper thread while this thread starts Ray, whose start-up is mostly waiting on
    the processes it spawns: a local instance takes 2-3 s, planning 10,000 files ~0.5 s.
    Nothing is dispatched before both are done, so the plan is still in the catalog
    before any work starts."""
    catalog = Catalog(state_dir)
    with JobLock(state_dir, job.name).acquire() as lock:
        run_id = new_run_id()
        lock.describe(run_id)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batchrun-plan") as pool:
            planning = pool.submit(_plan_run, job, state_dir, run_id, time.time())
            ray_ready, ray_error = _start_ray_beside_planning(job.config, job.base_dir)
            try:
                record, columns, summary = planning.result()
            except BaseException:
                if ray_ready and ray_ready.started:
                    ray.shutdown()
                raise
        if ray_error is not None:
            catalog.set_run_state(run_id, RunState.FAILED, message=str(ray_error))
            raise ray_error
        load_faults(job.config.faults).maybe_kill_driver("after_plan", 1 << 30)
        if on_planned:
            on_planned(summary)
        return _execute(catalog, record, job.config, columns, stop, on_progress, resumed=False,
                        ray_ready=ray_ready)


def _plan_run(job: Job, state_dir: Path, run_id: str, began: float
              ) -> tuple[RunRecord, dict[str, ColumnSpec], dict[str, Any]]:
    """List the files, cut the batches and record the plan (runs in the planning thread,
    with its own catalog connection: a SQLite connection stays in its thread)."""
    files = expand_sources(job)
    columns = _columns(job, files[0].path)
    batches = cut_batches(files, job.config.batch.max_files, job.config.batch.max_bytes)
    record = RunRecord(
        run_id=run_id, job=job.name, table=job.table, job_file=str(job.path),
        staging_dir=str(job.staging_dir), config=job.config.model_dump(by_alias=True),
        schema={n: s.type for n, s in columns.items()}, state=RunState.PLANNED,
        pid=os.getpid(), host=socket.gethostname(), created_at=began,
        started_at=None, finished_at=None, message=None)
    catalog = Catalog(state_dir)
    try:
        catalog.create_run(record, batches)
    finally:
        catalog.close()
    summary = {"run_id": run_id, "batches": len(batches), "files": len(files),
               "bytes": sum(f.size for f in files)}
    return record, columns, summary


def _start_ray_beside_planning(config: JobConfig, job_dir: Path
                               ) -> tuple[RayReady | None, EnvironmentProblem | None]:
    """Start (or join) Ray; an unreachable cluster is reported once planning is done, so
    the planned run can be marked failed with the reason."""
    try:
        return connect_ray(config, job_dir), None
    except EnvironmentProblem as exc:
        return None, exc


def resume_run(run_id: str, state_dir: Path, overrides: dict[str, Any] | None = None,
               stop: StopToken | None = None,
               on_progress: ProgressCallback | None = None) -> RunOutcome:
    """Finish a failed or interrupted run; committed batches are never redone."""
    catalog = Catalog(state_dir)
    record = catalog.run(run_id)
    with JobLock(state_dir, record.job).acquire(run_id):
        record = catalog.run(run_id)
        if record.state is RunState.SUCCEEDED:
            return RunOutcome(run_id, record.state, resumed=True, already_done=True)
        config = _config_with(record.config, overrides or {})
        columns = _stored_columns(config, record.schema or {})
        _reconcile(catalog, record)
        return _execute(catalog, record, config, columns, stop, on_progress, resumed=True)


def _reconcile(catalog: Catalog, record: RunRecord) -> None:
    """Remove uncommitted outputs; put running and failed batches back to pending."""
    removed = remove_orphans(Path(record.staging_dir), record.table, record.run_id,
                             catalog.committed(record.run_id).paths)
    reset = catalog.reset_unfinished_batches(record.run_id)
    logger.bind(run_id=record.run_id).info(
        "reconciled: removed {} uncommitted file(s), {} batch(es) back to pending", removed, reset)


def _execute(catalog: Catalog, record: RunRecord, config: JobConfig,
             columns: dict[str, ColumnSpec], stop: StopToken | None,
             on_progress: ProgressCallback | None, resumed: bool,
             ray_ready: RayReady | None = None) -> RunOutcome:
    sink = logs.open_run_log(Path(catalog.path.parent), record.run_id)
    faults = load_faults(config.faults)
    log = logger.bind(run_id=record.run_id)
    stop = stop or StopToken()
    started_ray = bool(ray_ready and ray_ready.started)
    try:
        catalog.set_run_state(record.run_id, RunState.RUNNING, pid=os.getpid(),
                              host=socket.gethostname(),
                              since=None if resumed else record.created_at)
        log.info("{} job {} ({})", "resuming" if resumed else "starting", record.job,
                 record.job_file)
        if ray_ready is None:
            ray_ready = connect_ray(config, Path(record.job_file).parent)
            started_ray = ray_ready.started
        log.info("connected to Ray at {} ({} CPUs) in {:.2f}s", ray_ready.address,
                 ray.cluster_resources().get("CPU", 0), ray_ready.seconds)
        stop.install()
        pending = _pending_batches(catalog, record.run_id)
        scheduler = Scheduler(
            catalog, record.run_id, _worker_spec(record, config, columns, faults),
            _limits(config), stop=stop, on_progress=on_progress,
            actor_options=_actor_options(config))
        outcome = scheduler.execute(pending, catalog.attempts(record.run_id))
        state = _final_state(catalog, record.run_id, outcome)
        _publish(catalog, record, columns)
        catalog.set_run_state(record.run_id, state, message=_message(outcome))
        log.info("run {}: {} batch(es) committed, {} failed, {} abandoned; catalog writes took"
                 " {:.3f}s", state.value, outcome.committed, outcome.failed, outcome.abandoned,
                 outcome.catalog_s)
        return RunOutcome(record.run_id, state, resumed=resumed, schedule=outcome)
    except BaseException as exc:
        catalog.set_run_state(record.run_id, RunState.FAILED, message=f"{type(exc).__name__}: {exc}")
        log.exception("run aborted")
        raise
    finally:
        stop.restore()
        if started_ray:
            ray.shutdown()
        logs.close_run_log(sink)


def _pending_batches(catalog: Catalog, run_id: str) -> list[QueuedBatch]:
    paths = catalog.paths_by_batch(run_id, BatchState.PENDING)
    return [QueuedBatch(seq=b["seq"], batch_id=b["batch_id"], source=b["source"] or "",
                        bytes=b["bytes"], files=tuple(paths.get(b["batch_id"], ())))
            for b in catalog.batches(run_id, BatchState.PENDING)]


def _final_state(catalog: Catalog, run_id: str, outcome: ScheduleOutcome) -> RunState:
    if outcome.stopped_by is not None:
        return RunState.INTERRUPTED
    counts = catalog.counts(run_id)
    if (counts["batches_failed"] or counts["files_failed"] or counts["batches_pending"]
            or counts["batches_skipped"]):
        return RunState.FAILED
    return RunState.SUCCEEDED


def _message(outcome: ScheduleOutcome) -> str | None:
    if outcome.stopped_by is not None:
        return f"stopped by signal {outcome.stopped_by}; {outcome.abandoned} batch(es) abandoned"
    if outcome.stopped_because:
        return f"stopped dispatching: {outcome.stopped_because}"
    if outcome.skipped:
        return f"{outcome.skipped} batch(es) skipped: a source's circuit breaker stayed open"
    return None


def _limits(config: JobConfig) -> Limits:
    execution = config.execution
    sequential = execution.mode == "sequential"
    return Limits(workers=1 if sequential else execution.workers, controls=controls(config),
                  max_retries=execution.max_retries, retry_budget=execution.retry_budget,
                  drain_timeout=execution.drain_timeout, batch_timeout=execution.batch_timeout,
                  max_failed_files=config.validation.max_failed_files,
                  checkpoint_each_round=not _checkpoints_deferred())


def _checkpoints_deferred() -> bool:
    """For measuring the checkpoint cost only (scripts/bench.py --checkpoint-cost): no
    per-round catalog transaction and no fsync of outputs. Such a run cannot resume."""
    return os.environ.get("BATCHRUN_DEFER_CHECKPOINTS") == "1"


def controls(config: JobConfig) -> Controls:
    """The admission limits of a job (see admission.py)."""
    execution = config.execution
    max_bytes = execution.max_bytes_in_flight
    if max_bytes is None:
        max_bytes = psutil.virtual_memory().available // DEFAULT_MEMORY_SHARE
    breaker = execution.circuit_breaker
    return Controls(in_flight=config.in_flight_cap, per_source=execution.per_source_concurrency,
                    max_bytes=None if max_bytes == "unlimited" else int(max_bytes),
                    stagger=execution.stagger, rate=execution.rate_limit,
                    breaker_failures=breaker.failures, breaker_cooldown=breaker.cooldown,
                    sequential=execution.mode == "sequential")


def _publish(catalog: Catalog, record: RunRecord, columns: dict[str, ColumnSpec]) -> None:
    apply_unique_keys(catalog, record, columns)
    committed = catalog.committed(record.run_id)
    staging = Path(record.staging_dir)
    remove_orphans(staging, record.table, record.run_id, committed.paths)
    publish_staging_db(staging, record.table, {n: s.type for n, s in columns.items()},
                       committed)


def _actor_options(config: JobConfig) -> dict[str, Any]:
    return {"num_cpus": 1, "max_restarts": 0, "max_task_retries": 0}


def _worker_spec(record: RunRecord, config: JobConfig, columns: dict[str, ColumnSpec],
                 faults: Faults) -> WorkerSpec:
    cpus = os.cpu_count() or 1
    return WorkerSpec(
        run_id=record.run_id, table=record.table, staging_dir=record.staging_dir,
        fmt=config.source.format, csv=config.source.csv, columns=columns,
        validation=config.validation,
        threads=max(1, cpus // _limits(config).workers),  # sequential: one worker, all cores
        reader=config.source.reader,
        transform=config.transform.function if config.transform else None,
        code_dirs=(str(Path(record.job_file).parent),),
        faults=faults, durable=not _checkpoints_deferred())


def _columns(job: Job, first_file: str) -> dict[str, ColumnSpec]:
    """The job's schema, or one inferred from the first file (recorded with the run)."""
    if job.config.schema_ is not None:
        return dict(job.config.schema_.columns)
    if job.config.source.reader:
        table = resolve(job.config.source.reader, [str(job.base_dir)])(first_file)
        return {name: ColumnSpec(type=type_name(table.schema.field(name).type))
                for name in table.column_names}
    inferred = infer_schema(first_file, job.config.source.format, job.config.source.csv)
    return {name: ColumnSpec(type=kind) for name, kind in inferred.items()}


def _stored_columns(config: JobConfig, schema: dict[str, str]) -> dict[str, ColumnSpec]:
    if config.schema_ is not None:
        return dict(config.schema_.columns)
    return {name: ColumnSpec(type=kind) for name, kind in schema.items()}


def _config_with(stored: dict[str, Any], overrides: dict[str, Any]) -> JobConfig:
    raw = {section: dict(values) if isinstance(values, dict) else values
           for section, values in stored.items() if values is not None}
    for dotted, value in overrides.items():
        if value is not None:
            set_dotted(raw, dotted, value)
    return validate_config(raw, "the stored job of this run")
