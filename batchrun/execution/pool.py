"""Worker pools: where batch pipelines run. The Ray actor lives here and only here."""

from __future__ import annotations

import ray

from batchrun.model import BatchResult, BatchTask
from batchrun.pipeline import BatchPipeline, PipelineSpec


class PipelineActor:
    """A Ray actor owning partition `partition`: one `BatchPipeline`, told its node."""

    def __init__(self, partition: int, spec: PipelineSpec) -> None:
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
        self.pipeline = BatchPipeline(partition, spec, node=node)

    def process(self, task: BatchTask) -> BatchResult:
        return self.pipeline.process(task)
