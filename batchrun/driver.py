"""The driver's scheduler: keep a bounded number of batches in flight, commit results.

Only this loop writes the catalog while a run executes (single writer). Each round it
dispatches ready batches to worker actors (at most `in_flight_cap` at once, spread over
the actors), waits with `ray.wait`, and records the round — new dispatches, committed
results, failures — in one catalog transaction.

Failures carry a kind. Transient ones (a worker that died, a batch past `batch_timeout`,
an I/O error) are retried with exponential back-off and jitter (tenacity) up to
`max_retries` per batch and `retry_budget` per run; permanent ones fail the batch. A dead
or timed-out actor is killed and replaced. A stop request (SIGINT/SIGTERM) stops
dispatching, drains for `drain_timeout`, and leaves every unfinished batch pending.
"""

from __future__ import annotations

import heapq
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import ray
from loguru import logger
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from tenacity import RetryCallState, wait_exponential_jitter

from batchrun.catalog import BatchResult, Catalog
from batchrun.errors import SourceError
from batchrun.faults import Faults
from batchrun.worker import BatchTask, BatchWorker, WorkerSpec

ProgressCallback = Callable[[dict[str, Any]], None]
Pending = tuple[str, int, tuple[str, ...]]
"""(batch_id, seq, files)"""
_BACKOFF = wait_exponential_jitter(exp_base=2, max=30, jitter=0.25)


def backoff_seconds(attempt: int) -> float:
    """tenacity's exponential back-off with jitter for the given (1-based) attempt."""
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = attempt
    return float(_BACKOFF(state)) * 0.2


class StopToken:
    """Set by SIGINT/SIGTERM (or by code); the scheduler checks it between rounds."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def request(self, signum: int = signal.SIGINT) -> None:
        self.signum = self.signum or signum
        self.count += 1

    def install(self) -> None:
        """Catch SIGINT and SIGTERM (call after ray.init, which sets its own)."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.request(signum)


@dataclass
class _Flight:
    task: BatchTask
    worker: int


@dataclass
class ScheduleOutcome:
    committed: int = 0
    failed: int = 0
    abandoned: int = 0
    stopped_by: int | None = None
    stopped_because: str | None = None
    failed_files: int = 0
    retries: int = 0


@dataclass(frozen=True)
class Limits:
    workers: int
    in_flight_cap: int
    max_retries: int = 3
    retry_budget: int = 100
    drain_timeout: float = 30.0
    batch_timeout: float | None = None
    max_failed_files: int = 0


@dataclass
class _Round:
    dispatched: list[tuple[str, int]] = field(default_factory=list)
    results: list[BatchResult] = field(default_factory=list)
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    retries: list[tuple[str, str, str]] = field(default_factory=list)


class Scheduler:
    def __init__(self, catalog: Catalog, run_id: str, spec: WorkerSpec, limits: Limits,
                 stop: StopToken | None = None, on_progress: ProgressCallback | None = None,
                 actor_options: dict[str, Any] | None = None) -> None:
        self.catalog, self.run_id, self.spec, self.limits = catalog, run_id, spec, limits
        self.stop = stop or StopToken()
        self.on_progress = on_progress
        self.faults: Faults = spec.faults
        self._actor_class = ray.remote(BatchWorker).options(**(actor_options or {}))
        self.actors = [self._new_actor(k) for k in range(limits.workers)]
        self.flights: dict[ray.ObjectRef, _Flight] = {}
        self.head_since: dict[int, float] = {}
        """When the batch at the head of each actor's queue started running."""
        self.timed_out: dict[str, float] = {}
        self.attempts: dict[str, int] = {}
        self.ready: deque[Pending] = deque()
        self.delayed: list[tuple[float, int, Pending]] = []
        self.results_seen = 0
        self.dead: set[int] = set()
        self.abandoned: list[str] = []
        self.outcome = ScheduleOutcome()
        self.log = logger.bind(run_id=run_id, batch_id="-")

    def _new_actor(self, partition: int) -> Any:
        return self._actor_class.remote(partition, self.spec)

    # -- the loop ----------------------------------------------------------------------

    def execute(self, pending: list[Pending], attempts: dict[str, int] | None = None
                ) -> ScheduleOutcome:
        """Run every pending batch until done, failed, out of budget or stopped."""
        self.ready.extend(pending)
        self.attempts.update(attempts or {})
        while self.ready or self.delayed or self.flights:
            if self._should_stop_dispatching():
                break
            current = _Round()
            self._release_due_retries()
            self._dispatch(current)
            self._collect(current, timeout=0.5)
            self._enforce_timeouts()
            self._record(current)
        self._drain()
        self.outcome.stopped_by = self.stop.signum
        return self.outcome

    def _should_stop_dispatching(self) -> bool:
        if self.stop.requested:
            return True
        budget = self.limits.max_failed_files
        if budget and self.outcome.failed_files >= budget:
            self.outcome.stopped_because = f"max_failed_files ({budget}) reached"
            return True
        if self.outcome.retries > self.limits.retry_budget:
            self.outcome.stopped_because = f"retry budget ({self.limits.retry_budget}) spent"
            return True
        return False

    def _release_due_retries(self) -> None:
        now = time.monotonic()
        while self.delayed and self.delayed[0][0] <= now:
            self.ready.appendleft(heapq.heappop(self.delayed)[2])
        if not self.ready and not self.flights and self.delayed:
            time.sleep(max(0.0, min(0.5, self.delayed[0][0] - now)))

    def _dispatch(self, current: _Round) -> None:
        while self.ready and len(self.flights) < self.limits.in_flight_cap:
            batch_id, seq, files = self.ready.popleft()
            worker = self._least_loaded_worker()
            attempt = self.attempts.get(batch_id, 0) + 1
            self.attempts[batch_id] = attempt
            task = BatchTask(batch_id=batch_id, files=files, seq=seq, attempt=attempt)
            if not self._queue_of(worker):
                self.head_since[worker] = time.monotonic()
            self.flights[self.actors[worker].process.remote(task)] = _Flight(task, worker)
            current.dispatched.append((batch_id, worker))
            self.log.bind(batch_id=batch_id).debug("dispatched to worker {} (attempt {})",
                                                   worker, attempt)

    def _queue_of(self, worker: int) -> list[_Flight]:
        return [f for f in self.flights.values() if f.worker == worker]

    def _least_loaded_worker(self) -> int:
        load = [0] * len(self.actors)
        for flight in self.flights.values():
            load[flight.worker] += 1
        return load.index(min(load))

    def _collect(self, current: _Round, timeout: float) -> None:
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
                current.results.append(ray.get(ref))
                self.results_seen += 1
            except RayActorError as exc:
                dead.add(flight.worker)
                self._retry_or_fail(flight, self._death_reason(flight, exc), "transient", current)
            except RayTaskError as exc:
                self._retry_or_fail(flight, _short(exc), _error_kind(exc), current)
        for worker in dead:
            if self.stop.requested:  # no more work for it; the cluster may be going down too
                self.dead.add(worker)
                continue
            self.actors[worker] = self._new_actor(worker)
            self.log.warning("worker {} died; replaced it", worker)
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

    def _retry_or_fail(self, flight: _Flight, error: str, kind: str, current: _Round) -> None:
        log = self.log.bind(batch_id=flight.task.batch_id)
        attempt = flight.task.attempt
        if self.stop.requested and kind == "transient":
            log.warning("abandoned while stopping ({}); left pending", error)
            self.abandoned.append(flight.task.batch_id)
            return
        if kind == "transient" and attempt <= self.limits.max_retries:
            delay = backoff_seconds(attempt)
            log.warning("attempt {} failed ({}); retrying in {:.1f}s", attempt, error, delay)
            task = flight.task
            heapq.heappush(self.delayed, (time.monotonic() + delay, task.seq,
                                          (task.batch_id, task.seq, task.files)))
            current.retries.append((task.batch_id, error, kind))
            self.outcome.retries += 1
            return
        log.error("failed after {} attempt(s): {}", attempt, error)
        current.failures.append((flight.task.batch_id, error, kind))

    def _record(self, current: _Round) -> None:
        self.catalog.record_progress(
            self.run_id, current.dispatched, current.results, current.failures,
            retries=current.retries, before_commit=self._kill_point("mid_commit"))
        if current.dispatched:
            self.faults.maybe_kill_driver("after_dispatch", self.results_seen)
        if current.results:
            self.faults.maybe_kill_driver("after_commit", self.results_seen)
        self._after_round(current)

    def _kill_point(self, point: str) -> Callable[[], None] | None:
        if self.faults.kill_driver != point:
            return None
        return lambda: self.faults.maybe_kill_driver(point, self.results_seen)

    def _after_round(self, current: _Round) -> None:
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
        self.outcome.failed += len(current.failures)
        self.outcome.failed_files += sum(len(self.catalog.files_of(self.run_id, b))
                                         for b, _, _ in current.failures)
        if self.on_progress and (current.results or current.failures):
            self.on_progress({"committed": len(current.results),
                              "failed": len(current.failures),
                              "rows": sum(r.rows_staged for r in current.results)})

    def _drain(self) -> None:
        """Wait up to drain_timeout for in-flight batches; leave the rest pending."""
        if self.flights:
            deadline = time.monotonic() + (self.limits.drain_timeout if self.stop.count < 2 else 0)
            self.log.warning("stopping: draining {} in-flight batch(es) for up to {:.0f}s",
                             len(self.flights), max(0.0, deadline - time.monotonic()))
            while self.flights and time.monotonic() < deadline and self.stop.count < 2:
                current = _Round()
                self._collect(current, timeout=min(0.5, max(0.0, deadline - time.monotonic())))
                self._record(current)
        unfinished = [f.task.batch_id for f in self.flights.values()] + self.abandoned
        unfinished += [p[0] for p in self.ready] + [p[2][0] for p in self.delayed]
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
