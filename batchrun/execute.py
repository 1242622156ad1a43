"""Executing a planned run: reconcile, schedule its pending batches on Ray, publish the
staging views, record the outcome. `runner.py` plans and connects; this module holds the
heavy imports (the scheduler, the worker and Arrow, DuckDB), which load in the planning
thread while Ray starts (see `runner.start_run`), and never for `status` and friends.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import ray
from loguru import logger

from batchrun import logs
from batchrun.admission import Controls, QueuedBatch
from batchrun.catalog import Catalog, RunRecord
from batchrun.config import ColumnSpec, JobConfig
from batchrun.driver import Limits, ProgressCallback, ScheduleOutcome, Scheduler
from batchrun.faults import Faults, load_faults
from batchrun.ray_session import RayReady, connect_ray
from batchrun.staging import publish_staging_db, remove_orphans
from batchrun.states import BatchState, RunState
from batchrun.stopping import StopToken
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


def reconcile(catalog: Catalog, record: RunRecord) -> None:
    """Remove uncommitted outputs; put running and failed batches back to pending."""
    removed = remove_orphans(Path(record.staging_dir), record.table, record.run_id,
                             catalog.committed(record.run_id).paths)
    reset = catalog.reset_unfinished_batches(record.run_id)
    logger.bind(run_id=record.run_id).info(
        "reconciled: removed {} uncommitted file(s), {} batch(es) back to pending", removed, reset)


def execute_run(catalog: Catalog, record: RunRecord, config: JobConfig,
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
    """The pending batches, each with its files' planned fingerprints."""
    planned = catalog.fingerprints_by_batch(run_id, BatchState.PENDING)
    queued = []
    for b in catalog.batches(run_id, BatchState.PENDING):
        files = planned.get(b["batch_id"], [])
        queued.append(QueuedBatch(
            seq=b["seq"], batch_id=b["batch_id"], source=b["source"] or "", bytes=b["bytes"],
            files=tuple(path for path, _ in files), expected=tuple(f for _, f in files)))
    return queued


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
