"""Starting a run: plan it, or load it for a resume; `run.py` takes it from there.

    start_run(job, catalog)
        check the job (prepare.py) ─► resolve its settings once (settings.py) ─► lock the job
        ─► in a helper thread: list and fingerprint the files, classify them against the
           job's table (manifest.py: new, changed, unchanged, settling), settle the
           schema, cut the batches of the new and changed ones, record run + batches +
           files in the catalog (one transaction)
           meanwhile, in this thread: connect to Ray (ray_session.py), once the
           classification says there is something to run (when the job has history)
        ─► run.execute_run(catalog, record, config, columns, settings, ...)
           or, nothing new: the run is recorded succeeded with 0 batches, Ray never started

    resume_run(run_id, catalog, overrides)
        refuse overrides a resume cannot honour ─► lock the job ─► load the stored run:
        its config (+ the overrides, which must stage exactly as it does) and schema
        ─► check it ─► resolve its settings once ─► run.resume_planned(...)

Both hold the job's lock for their whole life, so one job never runs twice at once. The
catalog is the caller's (one per command: `with Catalog(state_dir) as catalog`): start
hands it on and never closes it.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from loguru import logger

from batchrun import logs
from batchrun.catalog import Catalog
from batchrun.config import ColumnSpec, Job, JobConfig, canonical_key, set_dotted, validate_config
from batchrun.errors import ConfigError, RunNotFoundError
from batchrun.execution.prepare import check_config, check_job
from batchrun.execution.run import RunOutcome, abort_state, connect, execute_run, resume_planned
from batchrun.execution.scheduler import ProgressCallback
from batchrun.execution.settings import (
    ExecutionSettings,
    PoolChoice,
    choose_pool,
    may_run_inline,
    ray_connected,
    resolve_settings,
)
from batchrun.execution.stopping import DeferredInterrupt, StopToken
from batchrun.hooks import NO_HOOKS, Hooks, run_hooks
from batchrun.lock import JobLock
from batchrun.manifest import History, Selection, select_files
from batchrun.model import RunRecord, RunState
from batchrun.plan import cut_batches
from batchrun.readers.custom import resolve
from batchrun.redact import MASK, redact

if TYPE_CHECKING:
    from batchrun.execution.ray_session import RayReady


def new_run_id() -> str:
    return f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


RUN_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}"
"""A run id chosen with `--run-id` (e.g. a Ray job's submission id): it names files and
folders, so letters, digits, '.', '_' and '-' only."""


def _chosen_run_id(catalog: Catalog, run_id: str | None) -> str:
    """A new run id, or the one the caller chose, which must be new to the catalog: its
    retry is `batchrun resume RUN_ID`."""
    if run_id is None:
        return new_run_id()
    if not re.fullmatch(RUN_ID_PATTERN, run_id):
        raise ConfigError("--run-id", "", f"{run_id!r} is not a run id: letters, digits,"
                          " '.', '_' and '-', at most 80")
    try:
        catalog.run(run_id)
    except RunNotFoundError:
        return run_id
    raise ConfigError("--run-id", "", f"run {run_id} already exists in"
                          f" {catalog.path.parent}: resume it with `batchrun resume {run_id}`")


def start_run(job: Job, catalog: Catalog, stop: StopToken | None = None,
              on_progress: ProgressCallback | None = None,
              on_planned: ProgressCallback | None = None, run_id: str | None = None,
              full_refresh: bool = False) -> RunOutcome:
    """Plan the job and write the plan to the catalog, then execute it; `run_id` chooses
    the run's id (see `_chosen_run_id`). Only new and changed files are planned
    (`manifest.py`); with `full_refresh`, every matched file. Nothing new: the run is
    recorded (succeeded, 0 batches, with its counts) and Ray is not started.

    Planning (listing and fingerprinting the files, the catalog's plan transaction) runs
    in a helper thread while this thread starts Ray, whose start-up is mostly waiting on
    the processes it spawns: a local instance takes 2-3 s, planning 10,000 files ~0.5 s.
    A plan that may run inline (`[execution] pool`, settings.choose_pool) is listed
    first (~30 ms for 2,000 local files): a small one runs in this process and Ray is
    never started. Nothing is dispatched before the plan is recorded, so the plan is
    still in the catalog before any work starts."""
    check_job(job)
    settings = resolve_settings(job.config)
    hooks = run_hooks(job.config.faults)  # once per run
    state_dir = catalog.path.parent
    with JobLock(state_dir, job.name).acquire() as lock:
        run_id = _chosen_run_id(catalog, run_id)
        lock.describe(run_id)
        record, columns, summary, ray_ready, choice = _plan_while_ray_starts(
            catalog, job, settings, hooks, run_id, full_refresh, on_progress)
        if record.state is RunState.SUCCEEDED:  # nothing new: recorded as such, no Ray
            if on_planned:
                on_planned(summary)
            return RunOutcome(run_id, record.state, resumed=False)
        _log_planned(catalog, record, summary)
        hooks.after_plan()
        if on_planned:
            on_planned(summary)
        return execute_run(catalog, record, job.config, columns, settings, stop, on_progress,
                           resumed=False, ray_ready=ray_ready, hooks=hooks, choice=choice)


Planned = tuple[RunRecord, dict[str, ColumnSpec], dict[str, Any]]


def _plan_while_ray_starts(catalog: Catalog, job: Job, settings: ExecutionSettings,
                           hooks: Hooks, run_id: str, full_refresh: bool,
                           on_progress: ProgressCallback | None = None
                           ) -> tuple[RunRecord, dict[str, ColumnSpec], dict[str, Any],
                                      RayReady | None, PoolChoice]:
    """Plan in a helper thread while this (the main) thread starts Ray, if there is work
    for it. The helper thread tells `on_progress` about the plan ({"stage": "planned",
    ...}) as soon as it is recorded, while Ray may still be starting.

    When the plan may find nothing to run (the job's table serves files already, or
    `[source] settle` may hold files back), or may run inline, Ray is started only once
    the classification found new or changed files too many for the inline pool;
    otherwise at once. Nothing planned, or inline: no Ray (None).

    If either fails, or the wait is interrupted: a Ray instance this process started is
    shut down, and a run already planned is marked failed with the reason, as a failure
    during execution would be."""
    began = time.time()
    hooked = hooks is not NO_HOOKS
    inline = may_run_inline(settings, ray_connected=ray_connected(), hooked=hooked)
    may_be_empty = job.config.source.settle > 0 or (not full_refresh
                                                    and catalog.serves_any(job.name))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batchrun-plan") as pool:
        selecting = pool.submit(_select, catalog, job, began, full_refresh)
        planning = pool.submit(_plan_run, catalog, job, run_id, began, selecting, on_progress)
        ray_ready: RayReady | None = None
        asked_ray = False
        failure: BaseException | None = None
        try:
            with DeferredInterrupt() as interrupt:  # a Ctrl-C now is raised at the checks
                choice = choose_pool(settings, _planned_bytes(selecting) if inline else None,
                                     ray_connected=ray_connected(), hooked=hooked)
                if choice.pool == "ray" and (not may_be_empty or selecting.result().planned):
                    asked_ray = True
                    ray_ready = connect(settings, job.config, job.base_dir)
                interrupt.check()
                planned: Planned = planning.result()
                interrupt.check()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, once planning is over
            failure = exc
    if failure is None:
        return (*planned, ray_ready, choice)
    _shut_down_ours(settings, ray_ready, asked_ray)
    if planning.done() and not planning.cancelled() and planning.exception() is None:
        state, message = abort_state(failure)
        catalog.set_run_state(run_id, state, message=message)
    raise failure


def _planned_bytes(selecting: Future[Selection]) -> int:
    """The input bytes of the files the plan selected, a gzip at its decompressed size as
    a batch counts it (waits for the selection)."""
    return sum(f.weight for f in selecting.result().planned)


def _shut_down_ours(settings: ExecutionSettings, ray_ready: RayReady | None,
                    asked: bool) -> None:
    """Shut down a local Ray instance this process started, even if its start was
    interrupted halfway."""
    if (ray_ready.started if ray_ready else asked and not settings.address) and ray_connected():
        from batchrun.execution.ray_session import shutdown_local

        shutdown_local()


def _select(catalog: Catalog, job: Job, began: float, full_refresh: bool) -> Selection:
    """List, fingerprint and classify the files (in the planning thread)."""
    return select_files(job, catalog.path.parent, History.of(catalog, job.name), began,
                        full_refresh)


def _plan_run(catalog: Catalog, job: Job, run_id: str, began: float,
              selecting: Future[Selection], on_progress: ProgressCallback | None = None
              ) -> tuple[RunRecord, dict[str, ColumnSpec], dict[str, Any]]:
    """Cut the batches of the selected files and record the plan (runs in the planning
    thread; the main thread does not touch the catalog until this returns). Nothing
    selected: the run is recorded as done, with 0 batches."""
    selection = selecting.result()
    files = selection.planned
    if selection.verified:
        catalog.record_verified(job.name, selection.verified)
    columns = _columns(job, [f.path for f in files]) if files else _known_columns(job, catalog)
    batches = cut_batches(files, job.config.batch.max_files, job.config.batch.max_bytes)
    counts = selection.counts
    record = RunRecord(
        run_id=run_id, job=job.name, table=job.table, job_file=str(job.path),
        staging_dir=str(job.staging_dir),
        config=_stored_config(job.config),
        schema={n: s.type for n, s in columns.items()}, state=RunState.PLANNED,
        pid=os.getpid(), host=socket.gethostname(), created_at=began,
        started_at=None, finished_at=None, message=None, selection=counts)
    if not files:
        record = replace(record, state=RunState.SUCCEEDED, started_at=began,
                         finished_at=time.time(), message=counts.text())
        _log_nothing_new(catalog, record)
    catalog.create_run(record, batches)
    summary = {"run_id": run_id, "batches": len(batches), "files": len(files),
               "bytes": sum(f.size for f in files), **counts.as_json(),
               "seconds": round(time.time() - began, 3)}
    if on_progress and files:
        on_progress({"stage": "planned", **summary})
    return record, columns, summary


def _known_columns(job: Job, catalog: Catalog) -> dict[str, ColumnSpec]:
    """The schema of a run with no file to infer it from: the job's, else that of the
    job's latest run that recorded one, else none."""
    if job.config.schema_ is not None:
        return dict(job.config.schema_.columns)
    try:
        schema = catalog.run(catalog.latest_run_id(job.name)).schema or {}
    except RunNotFoundError:
        schema = {}
    return {name: ColumnSpec(type=kind) for name, kind in schema.items()}


def _log_planned(catalog: Catalog, record: RunRecord, summary: dict[str, Any]) -> None:
    """The plan's line in the run log, with the seconds it took (and, while Ray started,
    the wait for Ray: nothing is dispatched before both are done)."""
    sink = logs.open_run_log(catalog.path.parent, record.run_id)
    try:
        logger.bind(run_id=record.run_id).info(
            "planned {} batch(es) of {} file(s), {:,} bytes in {:.2f}s", summary["batches"],
            summary["files"], summary["bytes"], summary["seconds"])
    finally:
        logs.close_run_log(sink)


def _log_nothing_new(catalog: Catalog, record: RunRecord) -> None:
    sink = logs.open_run_log(catalog.path.parent, record.run_id)
    try:
        logger.bind(run_id=record.run_id).info("{}; Ray not started", record.message)
    finally:
        logs.close_run_log(sink)


def resume_run(run_id: str, catalog: Catalog, overrides: dict[str, Any] | None = None,
               stop: StopToken | None = None,
               on_progress: ProgressCallback | None = None, repair: bool = False,
               retry_quarantined: bool = False) -> RunOutcome:
    """Finish a failed or interrupted run; committed batches are never redone, except,
    with `repair`, those whose committed output is missing or damaged (any run state).
    `retry_quarantined` plans every quarantined file of the run again, whatever its
    reason (a supplier re-sent it), a succeeded run's too."""
    refuse_staging_changes(run_id, overrides or {})
    record = catalog.run(run_id)
    with JobLock(catalog.path.parent, record.job).acquire(run_id):
        record = catalog.run(run_id)
        if record.state is RunState.SUCCEEDED and not repair and not (
                retry_quarantined and catalog.quarantined_files(run_id)):
            return RunOutcome(run_id, record.state, resumed=True, already_done=True)
        config = _config_with(record.config, overrides or {})
        refuse_staged_difference(run_id, _config_with(record.config, {}), config)
        _refuse_masked_address(run_id, config)
        check_config(config, record.job_file, Path(record.job_file).parent)
        columns = _stored_columns(config, record.schema or {})
        return resume_planned(catalog, record, config, columns, resolve_settings(config),
                              stop, on_progress, hooks=run_hooks(config.faults), repair=repair,
                              retry_quarantined=retry_quarantined)


URI_KEYS = (("execution", "address"), ("staging", "dir"))
"""Config values that may be URIs with credentials (and `source.paths`): stored redacted.
Only these: a rule's pattern or allowed value that looks like a URI is data, and resume
uses it as stored."""


def _stored_config(config: JobConfig) -> dict[str, Any]:
    """The job's config as the catalog keeps it: credentials in its URIs masked."""
    stored = config.model_dump(by_alias=True)
    for section, key in URI_KEYS:
        if isinstance(stored[section].get(key), str):
            stored[section][key] = redact(stored[section][key])
    stored["source"]["paths"] = [redact(path) for path in stored["source"]["paths"]]
    return stored


def _refuse_masked_address(run_id: str, config: JobConfig) -> None:
    """The stored config has the cluster address with its credentials masked: joining
    that would fail, so the address must be given again."""
    if MASK in (config.execution.address or ""):
        raise ConfigError(f"run {run_id}", "execution.address",
                          "the cluster address had credentials, which batchrun does not "
                          "store; give it again with --address or BATCHRUN_ADDRESS")


RESUME_REFUSES = ("job", "source", "batch", "staging", "storage", "schema", "validation",
                  "transform")
"""Job sections a resume may not override: they decide what is staged and how, so a
change mid-run would make one table out of two different jobs (a column with two types,
files batched twice). Execution keys (workers, address, limits, retries) may change."""

RESUME_HONOURS = ("execution", "faults")
"""Job sections a resume takes from its overrides: they decide how the run executes (the
settings are resolved again from them), never what it stages. Every section of the job
is in exactly one of RESUME_REFUSES and RESUME_HONOURS (a unit test holds them to it)."""


def refuse_staging_changes(run_id: str, overrides: dict[str, Any]) -> None:
    """Refuse an override of a key in RESUME_REFUSES, however its section is spelled."""
    for dotted, value in overrides.items():
        if value is not None and canonical_key(dotted).split(".")[0] in RESUME_REFUSES:
            _refuse(run_id, dotted)


def refuse_staged_difference(run_id: str, stored: JobConfig, overridden: JobConfig) -> None:
    """The check that does not depend on spellings: the validated config with the
    overrides must stage exactly as the stored one does, section by section."""
    before, after = stored.model_dump(by_alias=True), overridden.model_dump(by_alias=True)
    for section in RESUME_REFUSES:
        if before.get(section) != after.get(section):
            _refuse(run_id, section)


def _refuse(run_id: str, key: str) -> NoReturn:
    raise ConfigError(f"resume {run_id}", key, "cannot change on resume: it changes what is"
                      " staged (start a new run with `batchrun run` instead)")


def _columns(job: Job, paths: list[str]) -> dict[str, ColumnSpec]:
    """The job's schema, or one inferred from the first files (recorded with the run);
    when no file can be read for it, a ConfigError: nothing is started."""
    if job.config.schema_ is not None:
        return dict(job.config.schema_.columns)
    from batchrun.readers.infer import CannotInferSchema, infer_schema, infer_with_reader

    source = job.config.source
    try:
        if source.reader:
            inferred = infer_with_reader(paths, resolve(source.reader, [str(job.base_dir)]))
        else:
            inferred = infer_schema(paths, source.format, source.csv)
    except CannotInferSchema as exc:
        raise ConfigError(str(job.path), "schema", str(exc)) from None
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
