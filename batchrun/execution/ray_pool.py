"""The Ray worker pool: one actor per worker, each running one `BatchPipeline`.

The only module of the scheduler's world that calls Ray: actor creation (with the run's
actor options, spread over the cluster's nodes), `ray.wait`/`ray.get`, telling a dead
actor (`RayActorError`) from a failed task (`RayTaskError`, classified by its cause), and
`ray.kill`.

Node loss. When a node dies, Ray fails its actors' tasks (`ActorDiedError`) once the GCS
has marked the node dead (settings.HEALTH_CHECK: ~3 s with batchrun's settings); the
scheduler retries them and asks for a replacement. The replacement may have nowhere to
go: the dead node's CPUs are gone and the others are busy with their own workers. A task
sent to an actor that cannot be placed waits forever (a lost node used to hang the run
that way), so a replacement gets work only once it is up (`usable`): until then, and for
good if the cluster never has room again, the surviving workers take the retries.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import ray
from loguru import logger
from ray.exceptions import RayActorError, RayTaskError

from batchrun.errors import ConfigError, EnvironmentProblem
from batchrun.execution.pool import Finished, Handle, Outcome, TaskFailure, error_kind, short_error
from batchrun.model import BatchResult, BatchTask, ErrorKind
from batchrun.pipeline import BatchPipeline, PipelineSpec

SPREAD = {"scheduling_strategy": "SPREAD"}
"""Workers go to as many nodes as there are (one node's CPUs are not filled first);
the run's own actor options win."""
REPLACEMENT_TRIES = 3
"""A replacement whose actor dies before it is up (its constructor fails, or it lands on
another dying node) is made again this many times; then its slot stays empty."""


class PipelineActor:
    """A Ray actor owning partition `partition`: one `BatchPipeline`, told its node."""

    def __init__(self, partition: int, spec: PipelineSpec) -> None:
        context = ray.get_runtime_context()
        self.pipeline = BatchPipeline(partition, spec, node=context.get_node_id())
        self.node_ip = ray.util.get_node_ip_address()

    def ready(self) -> str:
        """Answers once the actor is placed and built: its node's IP."""
        return self.node_ip

    def process(self, task: BatchTask) -> BatchResult:
        return replace(self.pipeline.process(task), node_ip=self.node_ip)


class RayActorPool:
    """One `PipelineActor` per worker, created with `actor_options` (and SPREAD).

    Partitions: worker k starts in partition k; each replacement gets a partition no
    actor of this pool has owned (`workers`, `workers + 1`, ...). Reusing the dead
    worker's partition is not safe: a node that is dead to the GCS (missed heartbeats,
    a network split) may still be running its actor, which may still be writing into its
    partition, and each partition has exactly one writer. Its stray files are uncommitted,
    never read, and removed by the run's (or the next resume's) orphan sweep."""

    def __init__(self, spec: PipelineSpec, actor_options: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self._actor_class = ray.remote(PipelineActor).options(**{**SPREAD,
                                                                **(actor_options or {})})
        self.actors: list[Any] = []
        self.pending: dict[Any, int] = {}
        """Each unfinished task's ObjectRef → its worker."""
        self.dead: set[int] = set()
        self.starting: dict[int, tuple[Any, int]] = {}
        """Replacements not up yet: worker → (its `ready` ObjectRef, tries so far)."""
        self._partitions = itertools.count()

    def start(self, workers: int) -> None:
        check_staging_reachable(self.spec.staging_dir)
        self.actors = [self._new_actor() for _ in range(workers)]

    def _new_actor(self) -> Any:
        return self._actor_class.remote(next(self._partitions), self.spec)

    def usable(self, worker: int) -> bool:
        """Whether the worker may be given tasks now: not a replacement still waiting
        for a place (or for its constructor)."""
        if worker not in self.starting:
            return worker not in self.dead
        ref, tries = self.starting[worker]
        done, _ = ray.wait([ref], timeout=0)
        if not done:
            return False
        try:
            ray.get(ref)
        except RayActorError as exc:
            self._retry_replacement(worker, tries, short_error(exc))
            return False
        del self.starting[worker]
        return True

    def _retry_replacement(self, worker: int, tries: int, why: str) -> None:
        """Make a replacement that died before it was up again, up to REPLACEMENT_TRIES;
        when every worker is gone that way, the cluster cannot run this job's actors."""
        if tries < REPLACEMENT_TRIES:
            self._replace(worker, tries + 1)
            return
        logger.error("worker {}'s replacement died {} times ({}); left empty", worker, tries, why)
        self.dead.add(worker)
        del self.starting[worker]
        if len(self.dead) == len(self.actors):
            raise EnvironmentProblem(f"no worker could start on the Ray cluster: {why}")

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
        """A new actor in a fresh partition. The old one is killed first: an actor that
        is only unreachable (`ActorUnavailableError`, a network blip) would otherwise
        keep its CPU."""
        ray.kill(self.actors[worker], no_restart=True)
        self._replace(worker, 1)

    def _replace(self, worker: int, tries: int) -> None:
        self.actors[worker] = self._new_actor()
        self.starting[worker] = (self.actors[worker].ready.remote(), tries)
        self.dead.discard(worker)

    def shutdown(self) -> None:
        """Kill every actor still alive (a dead one may be gone with its node)."""
        for worker, actor in enumerate(self.actors):
            if worker not in self.dead:
                ray.kill(actor, no_restart=True)
        self.pending.clear()
        self.starting.clear()


def check_staging_reachable(staging_dir: str) -> None:
    """Refuse a local staging folder when Ray may place workers on another machine: each
    worker would write its partition on its own machine's disk, where the driver never
    sees it. A node is this machine when its IP is the driver's node's IP; only nodes
    with CPUs (where a worker can go) count. Object storage (`s3://...`) is fine."""
    if urlsplit(staging_dir).scheme not in ("", "file"):
        return
    here = ray.get_runtime_context().get_node_id()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    mine = {n["NodeManagerAddress"] for n in nodes if n["NodeID"] == here}
    others = sorted({n["NodeManagerAddress"] for n in nodes
                     if n.get("Resources", {}).get("CPU", 0) > 0} - mine)
    if mine and others:
        raise ConfigError(
            "staging dir", staging_dir,
            f"a local folder, but Ray has worker nodes on other machines ({', '.join(others)})"
            " that cannot write into it: stage to object storage (s3://...), or run where"
            " every node is this machine")
