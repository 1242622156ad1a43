"""A run's execution settings, resolved once when the run starts (dlt's load/configuration).

The job file says what the operator asked for (`[execution]`, plus `--workers` and the
other overrides); this module decides, in one place, what that means for this run on
this machine, and everything downstream reads the answer, never the job file:

    JobConfig ──► resolve_settings(config) ──► ExecutionSettings (frozen)
                                                 ├─► ray_session: local num_cpus, address
                                                 ├─► scheduler Limits: actors, retries, timeouts
                                                 ├─► admission Controls: in flight, bytes, ...
                                                 └─► PipelineSpec: threads per worker

Sequential mode is decided here and nowhere else: one worker actor, one batch in flight,
batches admitted strictly in plan order (retries included), and the run stops
dispatching at the first failed batch. Admission and the scheduler only read the
`sequential` flag this module sets; neither looks at `execution.mode`.

Two values depend on the machine, so they are read here once per run: the CPU count (a
worker's reader threads, the local Ray instance's CPUs) and the memory available at the
start (the default bytes-in-flight budget). `resolve_settings` takes both as parameters,
so tests resolve a config for any machine without touching this one.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from typing import Literal

import psutil

from batchrun.config import JobConfig
from batchrun.execution.admission import Controls

DEFAULT_MEMORY_SHARE = 8
"""max_bytes_in_flight defaults to 1/8 of the memory available at start: a batch's Arrow
tables take several times its input bytes while it is parsed, checked and written."""

IN_FLIGHT_PER_WORKER = 2
"""max_in_flight defaults to this many batches per worker: one running, one queued on
the actor, so a worker never waits for the driver between two batches."""


@dataclass(frozen=True)
class ExecutionSettings:
    """What a run executes with; built by `resolve_settings`, read by everything else."""

    sequential: bool
    """One worker, one batch in flight, plan order, stop at the first failed batch."""
    workers: int
    """Worker actors to start (1 when sequential)."""
    max_in_flight: int
    """Batches dispatched and not yet finished (1 when sequential)."""
    threads_per_worker: int
    """Reader threads of each worker: the machine's CPUs shared among the workers."""
    max_bytes_in_flight: int | None
    """Input bytes in flight at most; None: no limit."""
    per_source: int | None
    stagger: float
    rate: float | None
    breaker_failures: int
    breaker_cooldown: float
    max_retries: int
    retry_budget: int
    drain_timeout: float
    batch_timeout: float | None
    max_failed_files: int
    address: str | None
    """The Ray cluster to join: `[execution] address` (or `--address`/BATCHRUN_ADDRESS),
    else RAY_ADDRESS (what `ray job submit` sets for its entrypoint). None starts a
    private local instance of `local_cpus` CPUs, whatever cluster is registered on the
    machine."""
    local_cpus: int
    """CPUs a local Ray instance advertises: the machine's, and at least one per worker."""
    pool: Literal["auto", "ray", "inline"] = "auto"
    """`[execution] pool` as asked; `choose_pool` decides what "auto" means for a plan."""
    cpus: int = 1
    """This machine's CPUs (the threads of an inline worker)."""

    def controls(self) -> Controls:
        """The admission limits (see admission.py)."""
        return Controls(in_flight=self.max_in_flight, per_source=self.per_source,
                        max_bytes=self.max_bytes_in_flight, stagger=self.stagger,
                        rate=self.rate, breaker_failures=self.breaker_failures,
                        breaker_cooldown=self.breaker_cooldown, sequential=self.sequential)


def resolve_settings(config: JobConfig, cpus: int | None = None,
                     available_memory: int | None = None) -> ExecutionSettings:
    """Decide the run's settings from its config; `cpus` and `available_memory` default
    to this machine's (read once, here)."""
    execution = config.execution
    sequential = execution.mode == "sequential"
    cpus = cpus or os.cpu_count() or 1
    workers = 1 if sequential else execution.workers
    in_flight = 1 if sequential else execution.max_in_flight or IN_FLIGHT_PER_WORKER * workers
    breaker = execution.circuit_breaker
    return ExecutionSettings(
        sequential=sequential, workers=workers, max_in_flight=in_flight,
        threads_per_worker=max(1, cpus // workers),
        max_bytes_in_flight=_bytes_in_flight(execution.max_bytes_in_flight, available_memory),
        per_source=execution.per_source_concurrency, stagger=execution.stagger,
        rate=execution.rate_limit, breaker_failures=breaker.failures,
        breaker_cooldown=breaker.cooldown, max_retries=execution.max_retries,
        retry_budget=execution.retry_budget, drain_timeout=execution.drain_timeout,
        batch_timeout=execution.batch_timeout,
        max_failed_files=config.validation.max_failed_files,
        address=execution.address or os.environ.get("RAY_ADDRESS") or None,
        local_cpus=max(cpus, workers), pool=execution.pool, cpus=cpus)


def _bytes_in_flight(configured: int | str | None, available_memory: int | None) -> int | None:
    """The configured budget; "unlimited" is None; unset is a share of available memory."""
    if configured == "unlimited":
        return None
    if configured is None:
        available = available_memory or psutil.virtual_memory().available
        return available // DEFAULT_MEMORY_SHARE
    return int(configured)


HEALTH_CHECK = {"health_check_period_ms": 1000, "health_check_timeout_ms": 1000,
                "health_check_failure_threshold": 3}
"""How the GCS notices a dead node: a check each second, dead after 3 failed ones (~3 s
after a machine dies, where Ray's defaults take 20-70 s; a dead node's batches are retried
only once Ray says so). batchrun's local instances get these as `_system_config`; a
cluster's head takes them from the environment of `ray start --head` (HEALTH_CHECK_ENV)."""
HEALTH_CHECK_ENV = {f"RAY_{name}": str(value) for name, value in HEALTH_CHECK.items()}


INLINE_MAX_BYTES = 64 * 1024 * 1024
""""auto" runs a local plan of at most this many input bytes in the batchrun process: about
a second of one worker's work (~60-70 MB/s of CSV), where starting a local Ray instance and
its actors costs 3-5 s. Measured on 2 cores: a 200 KB file takes ~1.3 s command-to-exit
inline and ~5-8 s on Ray; past ~200 MB the two workers of Ray catch up."""

Pool = Literal["ray", "inline"]


@dataclass(frozen=True)
class PoolChoice:
    """Where a run's batches run, and the one-line reason (the run log says both)."""

    pool: Pool
    reason: str


def choose_pool(settings: ExecutionSettings, planned_bytes: int | None, *, ray_connected: bool,
                hooked: bool) -> PoolChoice:
    """The pool for a plan of `planned_bytes` input bytes (None: not known yet, e.g. while
    the files are listed). `ray_connected`: this process already has Ray (free to use);
    `hooked`: the run has hooks (fault injection) that act out worker deaths and hangs,
    which only a Ray actor survives.

    "auto" is inline only when all of these hold: the run is local (no address, no
    RAY_ADDRESS), Ray is not connected already, there are no hooks, no `batch_timeout`
    (an inline batch cannot be stopped from outside) and the plan is at most
    INLINE_MAX_BYTES."""
    if settings.pool != "auto":
        return PoolChoice(settings.pool, "execution.pool")
    refusal = _not_inline(settings, ray_connected, hooked)
    if refusal is None and planned_bytes is not None and planned_bytes > INLINE_MAX_BYTES:
        refusal = f"{planned_bytes:,} input bytes, more than {INLINE_MAX_BYTES:,}"
    if refusal is not None:
        return PoolChoice("ray", f"auto: {refusal}")
    return PoolChoice("inline", f"auto: a local plan of {planned_bytes or 0:,} input bytes,"
                                f" at most {INLINE_MAX_BYTES:,}")


def _not_inline(settings: ExecutionSettings, ray_connected: bool, hooked: bool) -> str | None:
    """Why "auto" picks Ray whatever the plan's size, or None."""
    if settings.address:
        return "a cluster address"
    if ray_connected:
        return "this process has Ray already"
    if hooked:
        return "fault injection"
    if settings.batch_timeout is not None:
        return "execution.batch_timeout"
    return None


def may_run_inline(settings: ExecutionSettings, *, ray_connected: bool, hooked: bool) -> bool:
    """Whether `choose_pool` may pick inline once the plan's size is known."""
    return settings.pool == "inline" or (settings.pool == "auto"
                                         and _not_inline(settings, ray_connected, hooked) is None)


def inline_settings(settings: ExecutionSettings) -> ExecutionSettings:
    """The settings of a run on the inline pool: one worker (the batchrun process) with
    every CPU's reader threads, one batch at a time, so that each batch is committed as
    soon as it is written (a queued batch would run before the commit)."""
    return replace(settings, workers=1, threads_per_worker=settings.cpus, max_in_flight=1)


def ray_connected() -> bool:
    """Whether this process has Ray connected already (an API caller's `ray.init`), without
    importing Ray to find out."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())
