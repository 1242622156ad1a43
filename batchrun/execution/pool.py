"""Worker pools: where batch pipelines run, behind one small protocol.

The scheduler hands a pool `BatchTask`s for numbered workers and waits for what comes
back: a `BatchResult`, or a `TaskFailure` that says whether it is worth retrying and
whether the worker died with it. Two pools:

- `RayActorPool` (`ray_pool.py`, the one module of the pool that imports Ray): one
  actor per worker; every Ray call the scheduler needs (actor creation, wait/get, error
  classification, kill) is there.
- `InlinePool`: runs each task in this process, for unit tests and small local jobs
  (`[execution] pool`, settings.choose_pool: no Ray is started for them). Its work may
  act out a worker's death (`SimulatedDeath`) or a batch that never returns
  (`SimulatedHang`), deterministically; any other exception is a task's failure.

A worker runs its tasks one at a time, in the order they were submitted (as an actor does).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

from batchrun.errors import SourceError
from batchrun.execution.stopping import StopNow, StopToken
from batchrun.model import BatchResult, BatchTask, ErrorKind
from batchrun.pipeline import BatchPipeline, PipelineSpec

Handle = Hashable
"""What `submit` returns, to recognise the task when it finishes."""


@dataclass(frozen=True)
class TaskFailure:
    """A task that ended without a result."""

    error: str
    """One line: the exception's type and last line."""
    kind: ErrorKind
    worker_died: bool = False
    """The worker's process died (or was killed) with it; replace the worker."""


Outcome = BatchResult | TaskFailure


@dataclass(frozen=True)
class Finished:
    handle: Handle
    outcome: Outcome


class WorkerPool(Protocol):
    """Numbered workers 0..n-1, each owning its own output partition."""

    def start(self, workers: int) -> None: ...

    def submit(self, worker: int, task: BatchTask) -> Handle: ...

    def wait(self, timeout: float) -> list[Finished]:
        """Every task finished by now; if none is, wait up to `timeout` for the first."""
        ...

    def usable(self, worker: int) -> bool:
        """Whether the worker may be given tasks now (a replacement may still be waiting
        for a place in the cluster)."""
        ...

    def kill(self, worker: int) -> None:
        """Stop the worker now: its unfinished tasks come back as died failures."""
        ...

    def replace(self, worker: int) -> None:
        """A fresh worker in a dead worker's place."""
        ...

    def shutdown(self) -> None: ...


def error_kind(cause: BaseException) -> ErrorKind:
    """Transient (a retry may help: an I/O error, a source marked transient) or permanent."""
    if isinstance(cause, SourceError):
        return ErrorKind.TRANSIENT if cause.transient else ErrorKind.PERMANENT
    if isinstance(cause, (OSError, TimeoutError)):
        return ErrorKind.TRANSIENT
    return ErrorKind.PERMANENT


def short_error(exc: BaseException) -> str:
    """The exception's type and the last line of its message (or of its cause's)."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:500]


class NotingFirstSubmit:
    """A pool that calls `note()` at its first `submit` (the run log's "first batch
    dispatched" line), and is the wrapped pool otherwise."""

    def __init__(self, pool: WorkerPool, note: Callable[[], None]) -> None:
        self.pool = pool
        self.note: Callable[[], None] | None = note

    def start(self, workers: int) -> None:
        self.pool.start(workers)

    def submit(self, worker: int, task: BatchTask) -> Handle:
        note, self.note = self.note, None
        if note is not None:
            note()
        return self.pool.submit(worker, task)

    def wait(self, timeout: float) -> list[Finished]:
        return self.pool.wait(timeout)

    def usable(self, worker: int) -> bool:
        return self.pool.usable(worker)

    def kill(self, worker: int) -> None:
        self.pool.kill(worker)

    def replace(self, worker: int) -> None:
        self.pool.replace(worker)

    def shutdown(self) -> None:
        self.pool.shutdown()


# -- in-process ----------------------------------------------------------------------------

Work = Callable[[BatchTask], BatchResult]


class SimulatedDeath(Exception):
    """Raised by an `InlinePool`'s work: the worker dies with this task (and its queue)."""


class SimulatedHang(Exception):
    """Raised by an `InlinePool`'s work: the task never returns; its worker runs nothing
    more until it is killed."""


class InlinePool:
    """Runs each worker's tasks in this process when the scheduler waits.

    `make_work(k)` gives worker k's work (called again when it is replaced); with
    `redeliver`, every outcome is delivered twice, the second time one `wait` later (as a
    task delivered more than once would be)."""

    def __init__(self, make_work: Callable[[int], Work], redeliver: bool = False,
                 stop: StopToken | None = None) -> None:
        self.make_work = make_work
        self.redeliver = redeliver
        self.stop = stop
        """The run's token: a second signal while a task runs here abandons the task."""
        self.work: list[Work] = []
        self.queues: list[deque[tuple[int, BatchTask]]] = []
        self.hung: set[int] = set()
        self.dead: set[int] = set()
        self.failed: list[Finished] = []
        """Outcomes decided outside `wait` (a kill), delivered by the next `wait`."""
        self.again: list[Finished] = []
        self._handles = itertools.count()

    @classmethod
    def of_pipelines(cls, spec: PipelineSpec) -> InlinePool:
        """Each worker a `BatchPipeline` of its own partition, in this process."""
        return cls(lambda k: BatchPipeline(k, spec).process)

    def start(self, workers: int) -> None:
        self.work = [self.make_work(k) for k in range(workers)]
        self.queues = [deque() for _ in range(workers)]

    def submit(self, worker: int, task: BatchTask) -> Handle:
        handle = next(self._handles)
        if worker in self.dead:
            self.failed.append(Finished(handle, _died("WorkerDied: dead before the task began")))
        else:
            self.queues[worker].append((handle, task))
        return handle

    def wait(self, timeout: float) -> list[Finished]:
        finished, self.failed = [*self.again, *self.failed], []
        for worker in range(len(self.queues)):
            finished += self._run_queue(worker)
        self.again = list(finished) if self.redeliver else []
        if not finished:
            time.sleep(timeout)
        return finished

    def _run_queue(self, worker: int) -> list[Finished]:
        finished: list[Finished] = []
        queue = self.queues[worker]
        while queue and worker not in self.hung and worker not in self.dead:
            handle, task = queue[0]
            try:
                outcome: Outcome = self._run(worker, task)
            except (SimulatedHang, StopNow):  # abandoned: the scheduler's drain requeues it
                self.hung.add(worker)
                break
            except (SimulatedDeath, SystemExit) as exc:  # sys.exit() in a task ends an actor
                self.dead.add(worker)
                return finished + self._fail_queue(worker, short_error(exc))
            except Exception as exc:  # noqa: BLE001 - the task's failure, as a pool reports it
                outcome = TaskFailure(short_error(exc), error_kind(exc))
            queue.popleft()
            finished.append(Finished(handle, outcome))
        return finished

    def _run(self, worker: int, task: BatchTask) -> Outcome:
        if self.stop is None:
            return self.work[worker](task)
        self.stop.running_here = True
        try:
            return self.work[worker](task)
        finally:
            self.stop.running_here = False

    def _fail_queue(self, worker: int, why: str) -> list[Finished]:
        failed = [Finished(handle, _died(why)) for handle, _ in self.queues[worker]]
        self.queues[worker].clear()
        return failed

    def usable(self, worker: int) -> bool:
        return True

    def kill(self, worker: int) -> None:
        self.dead.add(worker)
        self.hung.discard(worker)
        self.failed += self._fail_queue(worker, "WorkerKilled: killed by the scheduler")

    def replace(self, worker: int) -> None:
        self.work[worker] = self.make_work(worker)
        self.dead.discard(worker)
        self.hung.discard(worker)

    def shutdown(self) -> None:
        for worker in range(len(self.queues)):
            self.queues[worker].clear()


def _died(error: str) -> TaskFailure:
    return TaskFailure(error, ErrorKind.TRANSIENT, worker_died=True)
