"""The driver's scheduler: keep a bounded number of batches in flight, commit results.

Only this loop writes the catalog while a run executes (single writer). Each round it
dispatches the batches that `admission.py` lets start (global, per-source, byte, rate,
stagger and circuit-breaker limits; or one at a time in sequential mode), spreads them
over the workers of a `WorkerPool` (Ray actors, or in-process), waits for what comes back,
and records the round — new dispatches, committed results, retries, failures, skipped
batches, each attempt's timings — in one catalog transaction.

Failures carry a kind. Transient ones (a worker that died, a batch past `batch_timeout`,
an I/O error) are retried with exponential back-off and jitter (tenacity) up to
`max_retries` per batch and `retry_budget` per run; permanent ones fail the batch. A dead
or timed-out worker is killed and replaced; the replacement gets batches once the pool
says it is up (a lost node's replacement may have no place to go: the other workers take
its batches meanwhile). A stop request (SIGINT/SIGTERM) stops
dispatching, drains for `drain_timeout`, and leaves every unfinished batch pending. A
result delivered twice is committed once.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from loguru import logger
from tenacity import RetryCallState, wait_exponential_jitter

from batchrun.catalog import Catalog
from batchrun.execution.admission import Admission, Controls, QueuedBatch
from batchrun.execution.pool import Handle, Outcome, TaskFailure, WorkerPool
from batchrun.execution.stopping import StopToken
from batchrun.hooks import NO_HOOKS, Hooks
from batchrun.model import (
    AttemptEnd,
    AttemptOutcome,
    BatchResult,
    BatchState,
    BatchTask,
    Dispatch,
    ErrorKind,
    RoundRecord,
)

ProgressCallback = Callable[[dict[str, Any]], None]
"""Told what a run does, as small dicts by "stage": "planned" (run_id, files, bytes,
batches: start.py, from the planning thread), "ray" (address, cpus, seconds: run.py),
"running" (one per scheduler round: counts to add up, and `in_flight` per worker) and
"stopping" (in_flight, timeout: the drain after a stop request)."""
CommitCallback = Callable[[list[BatchResult]], None]
"""Told each round's committed results, once the catalog has recorded them."""
_BACKOFF = wait_exponential_jitter(exp_base=2, max=30, jitter=0.25)
_ROUND_WAIT = 0.5
"""The longest a round waits for results before it looks at stop requests and timeouts."""
NO_WORKER_LIMIT = 300.0
"""Seconds a run with nothing in flight waits for a worker to be placed (a replacement
for workers lost with their nodes, on a cluster without free CPUs) before it stops
dispatching; its batches stay pending for a resume."""


def backoff_seconds(attempt: int, scale: float = 0.2) -> float:
    """tenacity's exponential back-off with jitter for the given (1-based) attempt, in
    units of `scale` seconds: 1, 2, 4 … 30 units, plus up to a quarter of one."""
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = attempt
    return float(_BACKOFF(state)) * scale


@dataclass(frozen=True)
class _Flight:
    """A batch in flight: what admission queued, and the dispatch the catalog records."""

    batch: QueuedBatch
    dispatch: Dispatch


class _WorkerQueues:
    """Each worker's unfinished tasks, in the order it runs them, and which worker has the
    fewest: a heap of (load, worker) entries kept lazily (a stale one is skipped when it
    surfaces), so choosing costs O(log workers), not O(workers), per dispatch."""

    def __init__(self, workers: int) -> None:
        self.queues: list[dict[Handle, None]] = [{} for _ in range(workers)]
        self._loads = [(0, worker) for worker in range(workers)]

    def least_loaded(self, usable: Callable[[int], bool]) -> int | None:
        """The usable worker with the fewest tasks (the lowest number among equals), or
        None when no worker is usable."""
        passed: list[tuple[int, int]] = []
        found = None
        while self._loads and found is None:
            load, worker = heapq.heappop(self._loads)
            if load != len(self.queues[worker]):
                continue  # stale
            passed.append((load, worker))
            if usable(worker):
                found = worker
        for entry in passed:
            heapq.heappush(self._loads, entry)
        return found

    def add(self, worker: int, handle: Handle) -> None:
        self.queues[worker][handle] = None
        self._note(worker)

    def remove(self, worker: int, handle: Handle) -> None:
        del self.queues[worker][handle]
        self._note(worker)

    def _note(self, worker: int) -> None:
        heapq.heappush(self._loads, (len(self.queues[worker]), worker))
        if len(self._loads) > 4 * len(self.queues) + 64:  # drop the stale entries
            self._loads = [(len(queue), w) for w, queue in enumerate(self.queues)]
            heapq.heapify(self._loads)

    def heads(self) -> Iterator[tuple[int, Handle]]:
        """(worker, the task it runs now) for every busy worker."""
        for worker, queue in enumerate(self.queues):
            if queue:
                yield worker, next(iter(queue))


@dataclass
class _Done:
    """Files and input bytes of a round's finished batches; files of its failed ones."""

    files: int = 0
    bytes: int = 0
    quarantined: int = 0

    def add(self, batch: QueuedBatch, quarantined: int = 0) -> None:
        self.files += len(batch.files)
        self.bytes += batch.bytes
        self.quarantined += quarantined


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
    backoff: float = 0.2
    """Seconds of the first retry's back-off (`backoff_seconds`); it doubles each time."""


def pending_batches(catalog: Catalog, run_id: str) -> list[QueuedBatch]:
    """The run's pending batches, each with its files' planned fingerprints."""
    planned = catalog.fingerprints_by_batch(run_id, BatchState.PENDING)
    queued = []
    for b in catalog.batches(run_id, BatchState.PENDING):
        files = planned.get(b["batch_id"], [])
        queued.append(QueuedBatch(
            seq=b["seq"], batch_id=b["batch_id"], source=b["source"] or "", bytes=b["bytes"],
            files=tuple(path for path, _ in files), expected=tuple(f for _, f in files)))
    return queued


class Scheduler:
    def __init__(self, catalog: Catalog, run_id: str, pool: WorkerPool, limits: Limits,
                 hooks: Hooks = NO_HOOKS, stop: StopToken | None = None,
                 on_progress: ProgressCallback | None = None,
                 on_commit: CommitCallback | None = None) -> None:
        self.catalog, self.run_id, self.pool, self.limits = catalog, run_id, pool, limits
        self.on_commit = on_commit
        self.hooks = hooks
        self.stop = stop or StopToken()
        self.on_progress = on_progress
        self.flights: dict[Handle, _Flight] = {}
        self.queues = _WorkerQueues(limits.workers)
        self.head_since: dict[int, float] = {}
        """When the batch at the head of each worker's queue started running."""
        self.timed_out: dict[str, float] = {}
        self.attempts: dict[str, int] = {}
        self.admission = Admission(limits.controls)
        self.results_seen = 0
        self.abandoned: list[str] = []
        self.outcome = ScheduleOutcome()
        self.no_worker_since: float | None = None
        """Since when no worker could take a batch (lost nodes, replacements unplaced)."""
        self.log = logger.bind(run_id=run_id, batch_id="-")
        self.done = _Done()  # this round's, for `on_progress`

    # -- the loop ----------------------------------------------------------------------

    def execute(self, pending: list[QueuedBatch], attempts: dict[str, int] | None = None
                ) -> ScheduleOutcome:
        """Run every pending batch until done, failed, out of budget or stopped."""
        for batch in sorted(pending):
            self.admission.add(batch)
        self.attempts.update(attempts or {})
        self.pool.start(self.limits.workers)
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
        waited = time.monotonic() - (self.no_worker_since or time.monotonic())
        if waited > NO_WORKER_LIMIT and not self.flights:
            self.outcome.stopped_because = (f"no worker could be placed for {waited:.0f}s"
                                            " (lost nodes, and no free CPUs left)")
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
        """How long this round may wait for results: until admission may let more start,
        or a running batch passes its timeout."""
        now = time.monotonic()
        wakes = [t for t in (self.admission.wake_at(now), self._next_timeout()) if t is not None]
        timeout = min([_ROUND_WAIT, *(max(0.0, t - now) for t in wakes)])
        if not self.flights and timeout:
            time.sleep(timeout)  # nothing running: only time can unblock a queued batch
        return timeout

    def _dispatch(self, current: RoundRecord) -> None:
        while (worker := self._free_worker()) is not None and (
                batch := self.admission.next_batch(time.monotonic())) is not None:
            admitted = time.time()  # the dispatch time admission decided on, before submit's cost
            attempt = self.attempts.get(batch.batch_id, 0) + 1
            self.attempts[batch.batch_id] = attempt
            task = BatchTask(batch_id=batch.batch_id, files=batch.files, seq=batch.seq,
                             attempt=attempt, expected=batch.expected)
            if not self.queues.queues[worker]:
                self.head_since[worker] = time.monotonic()
            handle = self.pool.submit(worker, task)
            dispatch = Dispatch(batch.batch_id, attempt, worker, batch.source, batch.bytes,
                                len(batch.files), admitted)
            self.flights[handle] = _Flight(batch, dispatch)
            self.queues.add(worker, handle)
            current.dispatched.append(dispatch)
            self.log.bind(batch_id=batch.batch_id).debug(
                "dispatched to worker {} (source {}, attempt {})", worker, batch.source, attempt)

    def _free_worker(self) -> int | None:
        """The least loaded usable worker; notes since when there was none."""
        worker = self.queues.least_loaded(self.pool.usable)
        if worker is None and self.no_worker_since is None:
            self.no_worker_since = time.monotonic()
            self.log.warning("no worker is up: a replacement waits for a place in the cluster")
        elif worker is not None:
            self.no_worker_since = None
        return worker

    def _collect(self, current: RoundRecord, timeout: float) -> None:
        """Gather every finished batch: results, failures and retries."""
        if not self.flights:
            return
        died: set[int] = set()
        for finished in self.pool.wait(timeout):
            flight = self.flights.pop(finished.handle, None)
            if flight is None:
                continue  # delivered before, and closed then
            worker = flight.dispatch.worker
            self.queues.remove(worker, finished.handle)
            self.head_since[worker] = time.monotonic()
            if self._close(flight, finished.outcome, current):
                died.add(worker)
        for worker in died:
            self._replace(worker)
        for event in self.admission.take_events():
            self.log.warning(event)
        for batch, why in self.admission.take_skipped():
            current.skipped.append((batch.batch_id, why))
            self.done.add(batch)
        if current.results:
            self.hooks.results_collected(self.results_seen)

    def _close(self, flight: _Flight, outcome: Outcome, current: RoundRecord) -> bool:
        """Record how the attempt ended; True if its worker died with it."""
        if isinstance(outcome, TaskFailure):
            self._retry_or_fail(flight, self._failure_reason(flight, outcome), outcome.kind,
                                current)
            return outcome.worker_died
        self.admission.finished(flight.batch, time.monotonic(), failed=False)
        self.done.add(flight.batch)
        current.ended.append(AttemptEnd(flight.dispatch.batch_id, flight.dispatch.attempt,
                                        AttemptOutcome.COMMITTED, time.time(), result=outcome))
        self.results_seen += 1
        return False

    def _failure_reason(self, flight: _Flight, failure: TaskFailure) -> str:
        if not failure.worker_died:
            return failure.error
        worker = flight.dispatch.worker
        limit = self.timed_out.pop(flight.dispatch.batch_id, None)
        if limit is not None:
            return f"timed out after {limit:.0f}s; worker {worker} killed and replaced"
        return f"worker {worker} died: {failure.error}"

    def _replace(self, worker: int) -> None:
        if self.stop.requested:  # no more work for it; the cluster may be going down too
            return
        self.pool.replace(worker)
        self.log.warning("worker {} died; replaced it", worker)

    def _next_timeout(self) -> float | None:
        """When the earliest running batch passes batch_timeout (monotonic), or None."""
        limit = self.limits.batch_timeout
        heads = [self.head_since.get(worker, 0.0) for worker, _ in self.queues.heads()]
        return min(heads) + limit + 0.001 if limit and heads else None

    def _enforce_timeouts(self) -> None:
        """Kill the worker whose running batch is past batch_timeout (it is then replaced)."""
        limit = self.limits.batch_timeout
        if not limit:
            return
        now = time.monotonic()
        for worker, handle in list(self.queues.heads()):
            if now - self.head_since.get(worker, now) > limit:
                head = self.flights[handle].dispatch
                self.timed_out[head.batch_id] = limit
                self.log.bind(batch_id=head.batch_id).warning(
                    "running for more than {:.0f}s: killing worker {}", limit, worker)
                self.pool.kill(worker)
                self.head_since[worker] = now + 3600  # until its death is collected

    def _retry_or_fail(self, flight: _Flight, error: str, kind: ErrorKind,
                       current: RoundRecord) -> None:
        batch_id, attempt = flight.dispatch.batch_id, flight.dispatch.attempt
        files = flight.batch.files
        log = self.log.bind(batch_id=batch_id, file=files[0] if len(files) == 1 else "-")
        now = time.monotonic()
        if self.stop.requested and kind is ErrorKind.TRANSIENT:
            log.warning("abandoned while stopping ({}); left pending", error)
            self.admission.finished(flight.batch, now, failed=None)
            current.ended.append(AttemptEnd(batch_id, attempt, AttemptOutcome.ABANDONED,
                                            time.time(), error, kind))
            self.abandoned.append(batch_id)
            return
        if kind is ErrorKind.TRANSIENT and attempt <= self.limits.max_retries:
            delay = backoff_seconds(attempt, self.limits.backoff)
            log.warning("attempt {} failed ({}); retrying in {:.1f}s", attempt, error, delay)
            self.admission.finished(flight.batch, now, failed=None)
            self.admission.retry(flight.batch, now + delay)
            current.ended.append(AttemptEnd(batch_id, attempt, AttemptOutcome.RETRIED,
                                            time.time(), error, kind))
            self.outcome.retries += 1
            return
        log.error("failed after {} attempt(s): {}", attempt, error)
        self.admission.finished(flight.batch, now, failed=True, error=error)
        self.done.add(flight.batch, quarantined=len(flight.batch.files))
        current.ended.append(AttemptEnd(batch_id, attempt, AttemptOutcome.FAILED, time.time(),
                                        error, kind))
        self.outcome.failed_files += len(flight.batch.files)

    # -- recording -----------------------------------------------------------------------

    def _record(self, current: RoundRecord) -> None:
        self._write(current)
        if current.dispatched:
            self.hooks.after_dispatch(self.results_seen)
        if current.results:
            self.hooks.after_commit(self.results_seen)
            if self.on_commit:
                self.on_commit(current.results)
        self._after_round(current)

    def _write(self, current: RoundRecord) -> None:
        """The round in one transaction; `mid_commit` runs after its writes, before COMMIT."""
        if not current:
            return
        started = time.perf_counter()
        with self.catalog.transaction():
            self.catalog.record_progress(self.run_id, current)
            self.hooks.mid_commit(self.results_seen)
        self.outcome.catalog_s += time.perf_counter() - started

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
                log.bind(file=outcome.path).warning("quarantined {}: {}", outcome.path,
                                                    outcome.error)
        failures = current.outcomes(AttemptOutcome.FAILED)
        self.outcome.failed += len(failures)
        self.outcome.skipped += len(current.skipped)
        if self.on_progress and current:
            self.on_progress(self._progress_event(current, len(failures)))
        self.done = _Done()

    def _progress_event(self, current: RoundRecord, failures: int) -> dict[str, Any]:
        """What the round changed (counts to add up) and each worker's batches in flight
        now: from memory, never from the catalog."""
        results = current.results
        return {"stage": "running", "committed": len(results),
                "failed": failures + len(current.skipped),
                "rows": sum(r.rows_staged for r in results),
                "rejected": sum(r.rows_rejected for r in results),
                "quarantined": self.done.quarantined
                + sum(1 for r in results for f in r.files if f.error),
                "files": self.done.files, "bytes": self.done.bytes,
                "in_flight": [len(queue) for queue in self.queues.queues]}

    def _drain(self) -> None:
        """Wait up to drain_timeout for in-flight batches; leave the rest pending."""
        if self.flights:
            deadline = time.monotonic() + (self.limits.drain_timeout if self.stop.count < 2 else 0)
            wait = max(0.0, deadline - time.monotonic())
            self.log.warning("stopping: draining {} in-flight batch(es) for up to {:.0f}s",
                             len(self.flights), wait)
            if self.on_progress:
                self.on_progress({"stage": "stopping", "in_flight": len(self.flights),
                                  "timeout": wait})
            while self.flights and time.monotonic() < deadline and self.stop.count < 2:
                current = RoundRecord()
                self._collect(current, timeout=min(_ROUND_WAIT,
                                                   max(0.0, deadline - time.monotonic())))
                self._record(current)
        unfinished = [f.dispatch.batch_id for f in self.flights.values()] + self.abandoned
        unfinished += [batch.batch_id for batch in self.admission.remaining()]
        self.catalog.requeue_all(self.run_id, unfinished)
        self.outcome.abandoned = len(self.flights) + len(self.abandoned)
        self.pool.shutdown()
        self.flights.clear()
