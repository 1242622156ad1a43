"""The one place run, batch and file states are named."""

from __future__ import annotations

from enum import Enum


class RunState(str, Enum):
    PLANNED = "planned"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def is_active(self) -> bool:
        return self in (RunState.PLANNED, RunState.RUNNING)


class BatchState(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMMITTED = "committed"
    FAILED = "failed"
    SKIPPED = "skipped"
    """Not run: its source's circuit breaker stayed open. `resume` tries it again."""


class FileState(str, Enum):
    PENDING = "pending"
    COMMITTED = "committed"
    FAILED = "failed"
    SKIPPED = "skipped"
