"""The driver's scheduler: keep a bounded number of batches in flight, commit results.

Only this loop writes the catalog while a run executes (single writer). Each round it
dispatches the batches that `admission.py` lets start (global, per-source, byte, rate,
stagger and circuit-breaker limits; or one at a time in sequential mode), spreads them
over the worker actors, waits with `ray.wait`, and records the round — new dispatches,
committed results, retries, failures, skipped batches, each attempt's timings — in one
catalog transaction.

Failures carry a kind. Transient ones (a worker that died, a batch past `batch_timeout`,
an I/O error) are retried with exponential back-off and jitter (tenacity) up to
`max_retries` per batch and `retry_budget` per run; permanent ones fail the batch. A dead
or timed-out actor is killed and replaced. A stop request (SIGINT/SIGTERM) stops
dispatching, drains for `drain_timeout`, and leaves every unfinished batch pending.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from loguru import logger
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from tenacity import RetryCallState, wait_exponential_jitter

from batchrun.catalog import Catalog
from batchrun.errors import SourceError
from batchrun.execution.admission import Admission, Controls, QueuedBatch
from batchrun.execution.pool import PipelineActor
from batchrun.execution.stopping import StopToken
from batchrun.model import AttemptEnd, BatchTask, Dispatch, RoundRecord
from batchrun.pipeline import PipelineSpec
from batchrun.tools.faults import Faults

ProgressCallback = Callable[[dict[str, Any]], None]
_BACKOFF = wait_exponential_jitter(exp_base=2, max=30, jitter=0.25)


def backoff_seconds(attempt: int) -> float:
    """tenacity's exponential back-off with jitter for the given (1-based) attempt."""
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = attempt
    return float(_BACKOFF(state)) * 0.2


@dataclass
class _Flight:
    task: BatchTask
    worker: int
    batch: QueuedBatch


@dataclass
class ScheduleOutcome:
    committed: int = 0
    failed: int = 0
    abandoned: int = 0
    stopped_by: int | None = None
    stopped_because: str | None = None
    failed_files: int = 0
    retries: int = 0
    skipped: int = 0
    catalog_s: float = 0.0
    """Time spent in the catalog's per-round transactions (the checkpoint cost)."""


@dataclass(frozen=True)
class Limits:
    workers: int
    controls: Controls
    max_retries: int = 3
    retry_budget: int = 100
    drain_timeout: float = 30.0
    batch_timeout: float | None = None
    max_failed_files: int = 0
    checkpoint_each_round: bool = True
    """False only to measure what checkpoints cost (`BATCHRUN_DEFER_CHECKPOINTS=1`): every
    round is held in memory and written in one transaction at the end, so a run killed
    midway has nothing to resume from."""


class Scheduler:
    def __init__(self, catalog: Catalog, run_id: str, spec: PipelineSpec, limits: Limits,
                 stop: StopToken | None = None, on_progress: ProgressCallback | None = None,
                 actor_options: dict[str, Any] | None = None) -> None:
        self.catalog, self.run_id, self.spec, self.limits = catalog, run_id, spec, limits
        self.stop = stop or StopToken()
        self.on_progress = on_progress
        self.faults: Faults = spec.faults
        self._actor_class = ray.remote(PipelineActor).options(**(actor_options or {}))
        self.actors = [self._new_actor(k) for k in range(limits.workers)]
        self.flights: dict[ray.ObjectRef, _Flight] = {}
        self.head_since: dict[int, float] = {}
        """When the batch at the head of each actor's queue started running."""
        self.timed_out: dict[str, float] = {}
        self.attempts: dict[str, int] = {}
        self.admission = Admission(limits.controls)
        self.results_seen = 0
        self.dead: set[int] = set()
        self.abandoned: list[str] = []
        self.outcome = ScheduleOutcome()
        self.deferred = RoundRecord()
        self.log = logger.bind(run_id=run_id, batch_id="-")

    def _new_actor(self, partition: int) -> Any:
        return self._actor_class.remote(partition, self.spec)

    # -- the loop ----------------------------------------------------------------------

    def execute(self, pending: list[QueuedBatch], attempts: dict[str, int] | None = None
                ) -> ScheduleOutcome:
        """Run every pending batch until done, failed, out of budget or stopped."""
        for batch in sorted(pending):
            self.admission.add(batch)
        self.attempts.update(attempts or {})
        while self.admission or self.flights:
            if self._should_stop_dispatching():
                break
            current = RoundRecord()
            self._dispatch(current)
            self._collect(current, timeout=self._wait_budget())
            self._enforce_timeouts()
            self._record(current)
        self._drain()
        self.outcome.stopped_by = self.stop.signum
        return self.outcome

    def _should_stop_dispatching(self) -> bool:
        if self.stop.requested:
            return True
        if self.limits.controls.sequential and self.outcome.failed:
            self.outcome.stopped_because = "sequential mode stops at the first failed batch"
            return True
        budget = self.limits.max_failed_files
        if budget and self.outcome.failed_files >= budget:
            self.outcome.stopped_because = f"max_failed_files ({budget}) reached"
            return True
        if self.outcome.retries > self.limits.retry_budget:
            self.outcome.stopped_because = f"retry budget ({self.limits.retry_budget}) spent"
            return True
        return False

    def _wait_budget(self) -> float:
        """How long this round may wait for results: until admission may let more start."""
        now = time.monotonic()
        wake = self.admission.wake_at(now)
        timeout = 0.5 if wake is None else max(0.0, min(0.5, wake - now))
        if not self.flights and timeout:
            time.sleep(timeout)  # nothing running: only time can unblock a queued batch
        return timeout

    def _dispatch(self, current: RoundRecord) -> None:
        while (batch := self.admission.next_batch(time.monotonic())) is not None:
            worker = self._least_loaded_worker()
            attempt = self.attempts.get(batch.batch_id, 0) + 1
            self.attempts[batch.batch_id] = attempt
            task = BatchTask(batch_id=batch.batch_id, files=batch.files, seq=batch.seq,
                             attempt=attempt, expected=batch.expected)
            if not self._queue_of(worker):
                self.head_since[worker] = time.monotonic()
            self.flights[self.actors[worker].process.remote(task)] = _Flight(task, worker, batch)
            current.dispatched.append(Dispatch(batch.batch_id, attempt, worker, batch.source,
                                               batch.bytes, len(batch.files), time.time()))
            self.log.bind(batch_id=batch.batch_id).debug(
                "dispatched to worker {} (source {}, attempt {})", worker, batch.source, attempt)

    def _queue_of(self, worker: int) -> list[_Flight]:
        return [f for f in self.flights.values() if f.worker == worker]

    def _least_loaded_worker(self) -> int:
        load = [0] * len(self.actors)
        for flight in self.flights.values():
            load[flight.worker] += 1
        return load.index(min(load))

    def _collect(self, current: RoundRecord, timeout: float) -> None:
        """Gather every finished batch: results, failures and retries."""
        if not self.flights:
            return
        ready, _ = ray.wait(list(self.flights), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(list(self.flights), num_returns=len(self.flights), timeout=0)
        dead: set[int] = set()
        for ref in ready:
            flight = self.flights.pop(ref)
            self.head_since[flight.worker] = time.monotonic()
            try:
                result = ray.get(ref)
            except RayActorError as exc:
                dead.add(flight.worker)
                self._retry_or_fail(flight, self._death_reason(flight, exc), "transient", current)
            except RayTaskError as exc:
                self._retry_or_fail(flight, _short(exc), _error_kind(exc), current)
            else:
                self.admission.finished(flight.batch, time.monotonic(), failed=False)
                current.ended.append(AttemptEnd(flight.task.batch_id, flight.task.attempt,
                                                "committed", time.time(), result=result))
                self.results_seen += 1
        for worker in dead:
            if self.stop.requested:  # no more work for it; the cluster may be going down too
                self.dead.add(worker)
                continue
            self.actors[worker] = self._new_actor(worker)
            self.log.warning("worker {} died; replaced it", worker)
        for event in self.admission.take_events():
            self.log.warning(event)
        current.skipped += [(batch.batch_id, why) for batch, why in self.admission.take_skipped()]
        if current.results:
            self.faults.maybe_kill_driver("after_rename", self.results_seen)

    def _death_reason(self, flight: _Flight, exc: RayActorError) -> str:
        limit = self.timed_out.pop(flight.task.batch_id, None)
        if limit is not None:
            return f"timed out after {limit:.0f}s; worker {flight.worker} killed and replaced"
        return f"worker {flight.worker} died: {_short(exc)}"

    def _enforce_timeouts(self) -> None:
        """Kill the actor whose running batch is past batch_timeout (it is then replaced)."""
        limit = self.limits.batch_timeout
        if not limit:
            return
        now = time.monotonic()
        for worker in range(len(self.actors)):
            queue = self._queue_of(worker)
            if queue and now - self.head_since.get(worker, now) > limit:
                self.timed_out[queue[0].task.batch_id] = limit
                self.log.bind(batch_id=queue[0].task.batch_id).warning(
                    "running for more than {:.0f}s: killing worker {}", limit, worker)
                ray.kill(self.actors[worker], no_restart=True)
                self.head_since[worker] = now + 3600  # until its death is collected

    def _retry_or_fail(self, flight: _Flight, error: str, kind: str, current: RoundRecord) -> None:
        log = self.log.bind(batch_id=flight.task.batch_id)
        task, now = flight.task, time.monotonic()
        if self.stop.requested and kind == "transient":
            log.warning("abandoned while stopping ({}); left pending", error)
            self.admission.finished(flight.batch, now, failed=None)
            current.ended.append(AttemptEnd(task.batch_id, task.attempt, "abandoned", time.time(),
                                            error, kind))
            self.abandoned.append(task.batch_id)
            return
        if kind == "transient" and task.attempt <= self.limits.max_retries:
            delay = backoff_seconds(task.attempt)
            log.warning("attempt {} failed ({}); retrying in {:.1f}s", task.attempt, error, delay)
            self.admission.finished(flight.batch, now, failed=None)
            self.admission.retry(flight.batch, now + delay)
            current.ended.append(AttemptEnd(task.batch_id, task.attempt, "retried", time.time(),
                                            error, kind))
            self.outcome.retries += 1
            return
        log.error("failed after {} attempt(s): {}", task.attempt, error)
        self.admission.finished(flight.batch, now, failed=True, error=error)
        current.ended.append(AttemptEnd(task.batch_id, task.attempt, "failed", time.time(),
                                        error, kind))

    def _record(self, current: RoundRecord) -> None:
        if self.limits.checkpoint_each_round:
            self._write(current)
        else:
            self.deferred.merge(current)
        if current.dispatched:
            self.faults.maybe_kill_driver("after_dispatch", self.results_seen)
        if current.results:
            self.faults.maybe_kill_driver("after_commit", self.results_seen)
        self._after_round(current)

    def _write(self, current: RoundRecord) -> None:
        started = time.perf_counter()
        self.catalog.record_progress(self.run_id, current,
                                     before_commit=self._kill_point("mid_commit"))
        self.outcome.catalog_s += time.perf_counter() - started

    def _kill_point(self, point: str) -> Callable[[], None] | None:
        if self.faults.kill_driver != point:
            return None
        return lambda: self.faults.maybe_kill_driver(point, self.results_seen)

    def _after_round(self, current: RoundRecord) -> None:
        for result in current.results:
            bad = [f for f in result.files if f.error]
            self.outcome.committed += 1
            self.outcome.failed_files += len(bad)
            log = self.log.bind(batch_id=result.batch_id)
            log.info("committed: {} rows staged, {} rejected, {} files quarantined, {:.2f}s",
                     result.rows_staged, result.rows_rejected, len(bad),
                     result.finished_at - result.started_at)
            for outcome in bad:
                log.warning("quarantined {}: {}", outcome.path, outcome.error)
        failures = current.outcomes("failed")
        self.outcome.failed += len(failures)
        self.outcome.skipped += len(current.skipped)
        self.outcome.failed_files += sum(len(self.catalog.files_of(self.run_id, e.batch_id))
                                         for e in failures)
        if self.on_progress and (current.results or failures or current.skipped):
            self.on_progress({"committed": len(current.results),
                              "failed": len(failures) + len(current.skipped),
                              "rows": sum(r.rows_staged for r in current.results)})

    def _drain(self) -> None:
        """Wait up to drain_timeout for in-flight batches; leave the rest pending."""
        if self.flights:
            deadline = time.monotonic() + (self.limits.drain_timeout if self.stop.count < 2 else 0)
            self.log.warning("stopping: draining {} in-flight batch(es) for up to {:.0f}s",
                             len(self.flights), max(0.0, deadline - time.monotonic()))
            while self.flights and time.monotonic() < deadline and self.stop.count < 2:
                current = RoundRecord()
                self._collect(current, timeout=min(0.5, max(0.0, deadline - time.monotonic())))
                self._record(current)
        self._write(self.deferred)  # empty unless checkpoints were deferred
        unfinished = [f.task.batch_id for f in self.flights.values()] + self.abandoned
        unfinished += [batch.batch_id for batch in self.admission.remaining()]
        self.catalog.requeue_all(self.run_id, unfinished)
        self.outcome.abandoned = len(self.flights) + len(self.abandoned)
        for worker, actor in enumerate(self.actors):
            if worker not in self.dead:
                ray.kill(actor, no_restart=True)
        self.flights.clear()


def _error_kind(exc: RayTaskError) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, SourceError):
        return "transient" if cause.transient else "permanent"
    if isinstance(cause, (OSError, TimeoutError, GetTimeoutError)):
        return "transient"
    return "permanent"


def _short(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:500]
