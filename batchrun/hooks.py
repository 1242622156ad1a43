"""Named points in a run where something may step in; each is a no-op here.

Like dramatiq's middleware: a cross-cutting concern implements the points it needs and the
production code calls every point without knowing who listens, so no production function
grows a parameter for it. Fault injection (`tools/faults.py`) is the one implementation
today. The pipeline's points run in the worker (a `Hooks` travels in the `PipelineSpec`,
so an implementation must pickle); the scheduler's and the planner's run in the driver.
"""

from __future__ import annotations

import os
from typing import Any

from batchrun.model import BatchTask

FAULTS_ENV = "BATCHRUN_FAULTS"
"""Fault injection for a run, as an inline TOML table body (see `tools/faults.py`)."""


class Hooks:
    """Every point, doing nothing. Subclass and override the points you need."""

    # -- in the worker, for each batch ------------------------------------------------

    def batch_started(self, task: BatchTask) -> None:
        """Before anything of the batch is read."""

    def before_read(self, path: str, attempt: int) -> None:
        """Before each file of the batch is read."""

    def before_write(self, task: BatchTask) -> None:
        """The batch is validated; nothing of it is written yet."""

    def after_rename(self, task: BatchTask) -> None:
        """The batch's outputs are renamed into place; the worker has not returned yet."""

    # -- in the driver ------------------------------------------------------------------

    def after_plan(self) -> None:
        """The plan is in the catalog; nothing is dispatched yet."""

    def after_dispatch(self, results_seen: int) -> None:
        """A round dispatched batches and recorded them. `results_seen`: batch results
        collected by this driver so far."""

    def results_collected(self, results_seen: int) -> None:
        """A round collected batch results (their outputs are on disk), not yet committed."""

    def mid_commit(self, results_seen: int) -> None:
        """A round's changes are written inside its catalog transaction, not committed."""

    def after_commit(self, results_seen: int) -> None:
        """A round that collected results is committed."""


NO_HOOKS = Hooks()


def run_hooks(faults: dict[str, Any] | None) -> Hooks:
    """The run's hooks, built once at its start: fault injection when the job's `[faults]`
    or BATCHRUN_FAULTS asks for it (only then are the tools loaded), else no-op hooks.
    Raises ConfigError for faults that do not parse."""
    if not faults and not os.environ.get(FAULTS_ENV):
        return NO_HOOKS
    from batchrun.tools.faults import fault_hooks

    return fault_hooks(faults)
