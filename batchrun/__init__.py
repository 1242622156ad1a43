"""batchrun: turn large, messy file sets into one clean, checkpointed staging table.

The public API. Each name is imported on first use (PEP 562), so `import batchrun` stays
cheap: it imports neither Ray nor pyarrow, DuckDB or pydantic until a name needs them.

    job = batchrun.load_job("configs/demo.toml")
    with batchrun.Catalog(Path(".batchrun")) as catalog:  # one catalog, opened once
        outcome = batchrun.start_run(job, catalog)
        status = batchrun.run_status(catalog, outcome.run_id)
    print(status.as_json())
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_HOMES = {
    "load_job": "batchrun.config", "Job": "batchrun.config",
    "start_run": "batchrun.execution.start", "resume_run": "batchrun.execution.start",
    "StopToken": "batchrun.execution.stopping",
    "Catalog": "batchrun.catalog",
    "run_status": "batchrun.report", "RunStatus": "batchrun.report",
    "run_metrics": "batchrun.metrics", "RunMetrics": "batchrun.metrics",
    "RunState": "batchrun.model", "BatchState": "batchrun.model", "FileState": "batchrun.model",
    **dict.fromkeys((
        "BatchrunError", "ConfigError", "EnvironmentProblem", "DiskFullError",
        "CommittedOutputError", "RunActiveError", "RunNotFoundError", "CatalogError",
        "StagingError", "SourceError", "TransientSourceError", "PermanentSourceError"),
        "batchrun.errors"),
}
"""Public name → the module that defines it."""

__all__ = [
    "BatchState", "BatchrunError", "Catalog", "CatalogError", "CommittedOutputError",
    "ConfigError", "DiskFullError", "EnvironmentProblem", "FileState", "Job",
    "PermanentSourceError", "RunActiveError", "RunMetrics", "RunNotFoundError", "RunState",
    "RunStatus", "SourceError", "StagingError", "StopToken", "TransientSourceError",
    "load_job", "resume_run", "run_metrics", "run_status", "start_run",
]

if TYPE_CHECKING:
    from batchrun.catalog import Catalog
    from batchrun.config import Job, load_job
    from batchrun.errors import (
        BatchrunError,
        CatalogError,
        CommittedOutputError,
        ConfigError,
        DiskFullError,
        EnvironmentProblem,
        PermanentSourceError,
        RunActiveError,
        RunNotFoundError,
        SourceError,
        StagingError,
        TransientSourceError,
    )
    from batchrun.execution.start import resume_run, start_run
    from batchrun.execution.stopping import StopToken
    from batchrun.metrics import RunMetrics, run_metrics
    from batchrun.model import BatchState, FileState, RunState
    from batchrun.report import RunStatus, run_status


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'batchrun' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
