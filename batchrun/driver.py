"""The driver's scheduler: keep a bounded number of batches in flight, commit results.

Only this loop writes the catalog while a run executes (single writer). It dispatches
batches to worker actors (at most `in_flight_cap` at once, spread over the actors),
waits with `ray.wait`, and records every round — new dispatches, committed results,
failures — in one catalog transaction. A dead actor is replaced and its batches are
retried; a stop request (SIGINT/SIGTERM) stops dispatching, drains, and leaves every
unfinished batch pending so `resume` can finish the run.
"""

from __future__ import annotations

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

from batchrun.catalog import BatchResult, Catalog
from batchrun.errors import SourceError
from batchrun.worker import BatchTask, BatchWorker, WorkerSpec

ProgressCallback = Callable[[dict[str, Any]], None]


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
    attempt: int


@dataclass
class ScheduleOutcome:
    committed: int = 0
    failed: int = 0
    abandoned: int = 0
    stopped_by: int | None = None
    failed_files: int = 0
    retries: int = 0
    warnings: list[str] = field(default_factory=list)


class Scheduler:
    def __init__(self, catalog: Catalog, run_id: str, spec: WorkerSpec, workers: int,
                 in_flight_cap: int, max_retries: int, drain_timeout: float,
                 max_failed_files: int = 0, stop: StopToken | None = None,
                 on_progress: ProgressCallback | None = None,
                 actor_options: dict[str, Any] | None = None) -> None:
        self.catalog, self.run_id, self.spec = catalog, run_id, spec
        self.cap, self.max_retries, self.drain_timeout = in_flight_cap, max_retries, drain_timeout
        self.max_failed_files = max_failed_files
        self.stop = stop or StopToken()
        self.on_progress = on_progress
        self._actor_class = ray.remote(BatchWorker).options(**(actor_options or {}))
        self.actors = [self._new_actor(k) for k in range(workers)]
        self.flights: dict[ray.ObjectRef, _Flight] = {}
        self.attempts: dict[str, int] = {}
        self.outcome = ScheduleOutcome()
        self.log = logger.bind(run_id=run_id, batch_id="-")

    def _new_actor(self, partition: int) -> Any:
        return self._actor_class.remote(partition, self.spec)

    def execute(self, pending: list[tuple[str, tuple[str, ...]]]) -> ScheduleOutcome:
        """Run every pending (batch_id, files) until done, failed or stopped."""
        queue = deque(pending)
        while queue or self.flights:
            if self.stop.requested or self._failed_file_budget_spent():
                break
            dispatched = self._dispatch(queue)
            results, failures, retry = self._collect(timeout=0.5)
            queue.extendleft(reversed(retry))
            self.catalog.record_progress(self.run_id, dispatched, results, failures)
            self._after_round(results, failures)
        if self.flights:
            self._drain()
        self.outcome.stopped_by = self.stop.signum
        return self.outcome

    def _failed_file_budget_spent(self) -> bool:
        budget = self.max_failed_files
        return bool(budget) and self.outcome.failed_files >= budget

    def _dispatch(self, queue: deque[tuple[str, tuple[str, ...]]]) -> list[tuple[str, int]]:
        dispatched = []
        while queue and len(self.flights) < self.cap:
            batch_id, files = queue.popleft()
            worker = self._least_loaded_worker()
            task = BatchTask(batch_id=batch_id, files=files)
            ref = self.actors[worker].process.remote(task)
            attempt = self.attempts.get(batch_id, 0) + 1
            self.attempts[batch_id] = attempt
            self.flights[ref] = _Flight(task=task, worker=worker, attempt=attempt)
            dispatched.append((batch_id, worker))
            self.log.bind(batch_id=batch_id).debug("dispatched to worker {} (attempt {})",
                                                   worker, attempt)
        return dispatched

    def _least_loaded_worker(self) -> int:
        load = [0] * len(self.actors)
        for flight in self.flights.values():
            load[flight.worker] += 1
        return load.index(min(load))

    def _collect(self, timeout: float
                 ) -> tuple[list[BatchResult], list[tuple[str, str, str]],
                            list[tuple[str, tuple[str, ...]]]]:
        """Gather every finished batch: results to commit, failures, batches to retry."""
        results: list[BatchResult] = []
        failures: list[tuple[str, str, str]] = []
        retry: list[tuple[str, tuple[str, ...]]] = []
        if not self.flights:
            return results, failures, retry
        ready, _ = ray.wait(list(self.flights), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(list(self.flights), num_returns=len(self.flights), timeout=0)
        dead_workers: set[int] = set()
        for ref in ready:
            flight = self.flights.pop(ref)
            try:
                results.append(ray.get(ref))
            except RayActorError as exc:
                dead_workers.add(flight.worker)
                self._retry_or_fail(flight, f"worker {flight.worker} died: {_short(exc)}",
                                    "transient", retry, failures)
            except RayTaskError as exc:
                kind = _error_kind(exc)
                self._retry_or_fail(flight, _short(exc), kind, retry, failures)
        for worker in dead_workers:
            self.actors[worker] = self._new_actor(worker)
            self.log.warning("worker {} died; replaced it", worker)
        return results, failures, retry

    def _retry_or_fail(self, flight: _Flight, error: str, kind: str,
                       retry: list[tuple[str, tuple[str, ...]]],
                       failures: list[tuple[str, str, str]]) -> None:
        log = self.log.bind(batch_id=flight.task.batch_id)
        if kind == "transient" and flight.attempt <= self.max_retries:
            delay = min(30.0, 0.2 * 2 ** (flight.attempt - 1))
            log.warning("attempt {} failed ({}); retrying in {:.1f}s", flight.attempt, error, delay)
            self.catalog.requeue(self.run_id, flight.task.batch_id, error, kind)
            time.sleep(delay)
            retry.append((flight.task.batch_id, flight.task.files))
            self.outcome.retries += 1
            return
        log.error("failed after {} attempt(s): {}", flight.attempt, error)
        failures.append((flight.task.batch_id, error, kind))

    def _after_round(self, results: list[BatchResult],
                     failures: list[tuple[str, str, str]]) -> None:
        for result in results:
            bad = [f for f in result.files if f.error]
            self.outcome.committed += 1
            self.outcome.failed_files += len(bad)
            self.outcome.warnings.extend(f"{f.path}: {f.warning}" for f in result.files
                                         if f.warning)
            log = self.log.bind(batch_id=result.batch_id)
            log.info("committed: {} rows staged, {} rejected, {} files quarantined, {:.2f}s",
                     result.rows_staged, result.rows_rejected, len(bad),
                     result.finished_at - result.started_at)
            for outcome in bad:
                log.warning("quarantined {}: {}", outcome.path, outcome.error)
        self.outcome.failed += len(failures)
        self.outcome.failed_files += sum(len(self._files_of(b)) for b, _, _ in failures)
        if self.on_progress and (results or failures):
            self.on_progress({"committed": len(results), "failed": len(failures),
                              "rows": sum(r.rows_staged for r in results)})

    def _files_of(self, batch_id: str) -> list[dict[str, Any]]:
        return self.catalog.files_of(self.run_id, batch_id)

    def _drain(self) -> None:
        """Wait up to drain_timeout for in-flight batches; abandon the rest (pending)."""
        deadline = time.monotonic() + (self.drain_timeout if self.stop.count < 2 else 0)
        self.log.warning("stopping: draining {} in-flight batch(es) for up to {:.0f}s",
                         len(self.flights), max(0.0, deadline - time.monotonic()))
        while self.flights and time.monotonic() < deadline and self.stop.count < 2:
            results, failures, _ = self._collect(timeout=min(0.5, deadline - time.monotonic()))
            self.catalog.record_progress(self.run_id, [], results, failures)
            self._after_round(results, failures)
        for flight in self.flights.values():
            self.catalog.requeue(self.run_id, flight.task.batch_id, "abandoned at stop", "stop")
            self.outcome.abandoned += 1
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.flights.clear()


def _error_kind(exc: RayTaskError) -> str:
    cause = exc.cause if hasattr(exc, "cause") else None
    if isinstance(cause, SourceError) and cause.transient:
        return "transient"
    if isinstance(cause, (OSError, TimeoutError, GetTimeoutError)):
        return "transient"
    return "permanent"


def _short(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:500]
