"""The Ray worker pool: one actor per worker, each running one `BatchPipeline`.

The only module of the scheduler's world that calls Ray: actor creation (with the run's
actor options), `ray.wait`/`ray.get`, telling a dead actor (`RayActorError`) from a failed
task (`RayTaskError`, classified by its cause), and `ray.kill`.
"""

from __future__ import annotations

import time
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from batchrun.execution.pool import Finished, Handle, Outcome, TaskFailure, error_kind, short_error
from batchrun.model import BatchResult, BatchTask, ErrorKind
from batchrun.pipeline import BatchPipeline, PipelineSpec


class PipelineActor:
    """A Ray actor owning partition `partition`: one `BatchPipeline`, told its node."""

    def __init__(self, partition: int, spec: PipelineSpec) -> None:
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
        self.pipeline = BatchPipeline(partition, spec, node=node)

    def process(self, task: BatchTask) -> BatchResult:
        return self.pipeline.process(task)


class RayActorPool:
    """One `PipelineActor` per worker, created with `actor_options`."""

    def __init__(self, spec: PipelineSpec, actor_options: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self._actor_class = ray.remote(PipelineActor).options(**(actor_options or {}))
        self.actors: list[Any] = []
        self.pending: dict[Any, int] = {}
        """Each unfinished task's ObjectRef → its worker."""
        self.dead: set[int] = set()

    def start(self, workers: int) -> None:
        self.actors = [self._actor_class.remote(k, self.spec) for k in range(workers)]

    def submit(self, worker: int, task: BatchTask) -> Handle:
        ref = self.actors[worker].process.remote(task)
        self.pending[ref] = worker
        return ref

    def wait(self, timeout: float) -> list[Finished]:
        if not self.pending:
            time.sleep(timeout)
            return []
        ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(list(self.pending), num_returns=len(self.pending), timeout=0)
        return [Finished(ref, self._outcome(ref)) for ref in ready]

    def _outcome(self, ref: Any) -> Outcome:
        worker = self.pending.pop(ref)
        try:
            result: BatchResult = ray.get(ref)
        except RayActorError as exc:
            self.dead.add(worker)
            return TaskFailure(short_error(exc), ErrorKind.TRANSIENT, worker_died=True)
        except RayTaskError as exc:
            return TaskFailure(short_error(exc), error_kind(getattr(exc, "cause", None) or exc))
        return result

    def kill(self, worker: int) -> None:
        ray.kill(self.actors[worker], no_restart=True)

    def replace(self, worker: int) -> None:
        self.actors[worker] = self._actor_class.remote(worker, self.spec)
        self.dead.discard(worker)

    def shutdown(self) -> None:
        """Kill every actor still alive (a dead one may be gone with its node)."""
        for worker, actor in enumerate(self.actors):
            if worker not in self.dead:
                ray.kill(actor, no_restart=True)
        self.pending.clear()
