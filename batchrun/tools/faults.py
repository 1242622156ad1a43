"""Fault injection for tests and drills: real failures inside the real worker and driver.

`FaultHooks` is one implementation of `batchrun.hooks.Hooks`: a run loads it once, at its
start (`fault_hooks`), and hands it to the pipeline and the scheduler. Configured by a
`[faults]` table in the job file, or by the environment variable `BATCHRUN_FAULTS`
holding the same keys as an inline TOML table body, e.g. `BATCHRUN_FAULTS='kill_driver =
"mid_commit", kill_driver_after = 3'` (the environment wins). Nothing here is active
unless asked for. Decisions are deterministic given `seed`, so a test that injects
faults gets the same faults on every run.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
import tomllib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from batchrun.errors import ConfigError, TransientSourceError
from batchrun.hooks import FAULTS_ENV, Hooks
from batchrun.model import BatchTask

DriverPoint = Literal["after_plan", "after_dispatch", "after_rename", "mid_commit", "after_commit"]
WorkerPoint = Literal["before_write", "after_rename"]


class Faults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    read_error_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    """Probability that reading a file raises a transient I/O error (per file and attempt)."""
    fail_paths: list[str] = []
    """Files whose path contains one of these strings fail to read on every attempt with a
    transient I/O error: a source behind an endpoint that is down."""
    batch_delay: Annotated[float, Field(ge=0.0)] = 0.0
    """Seconds every batch sleeps in its worker before writing (slows a run down)."""
    hang_batches: list[int] = []
    """Batch sequence numbers that hang on their first attempt ..."""
    hang_seconds: Annotated[float, Field(ge=0.0)] = 3600.0
    """... for this long."""
    crash_worker: WorkerPoint | None = None
    """Where the worker process dies (os._exit) on the first attempt of `crash_batches`."""
    crash_batches: list[int] = []
    kill_driver: DriverPoint | None = None
    """Where the driver SIGKILLs itself, once `kill_driver_after` batch results arrived."""
    kill_driver_after: Annotated[int, Field(ge=0)] = 1

    def maybe_fail_read(self, path: str, attempt: int) -> None:
        if any(part in path for part in self.fail_paths):
            raise TransientSourceError(path, f"injected: endpoint down (attempt {attempt})")
        if self.read_error_rate and _chance(self.seed, path, attempt) < self.read_error_rate:
            raise TransientSourceError(path, f"injected I/O error (attempt {attempt})")

    def maybe_hang(self, seq: int, attempt: int) -> None:
        if seq in self.hang_batches and attempt == 1:
            time.sleep(self.hang_seconds)

    def maybe_crash_worker(self, point: str, seq: int, attempt: int) -> None:
        if self.crash_worker == point and seq in self.crash_batches and attempt == 1:
            os._exit(17)

    def maybe_kill_driver(self, point: str, results_seen: int) -> None:
        if self.kill_driver == point and results_seen >= self.kill_driver_after:
            os.kill(os.getpid(), signal.SIGKILL)


class FaultHooks(Hooks):
    """The faults of a run, acted out at the hook points (the driver's "after_rename" is
    where results were collected: their outputs are renamed, not yet committed)."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults

    def batch_started(self, task: BatchTask) -> None:
        self.faults.maybe_hang(task.seq, task.attempt)

    def before_read(self, path: str, attempt: int) -> None:
        self.faults.maybe_fail_read(path, attempt)

    def before_write(self, task: BatchTask) -> None:
        if self.faults.batch_delay:
            time.sleep(self.faults.batch_delay)
        self.faults.maybe_crash_worker("before_write", task.seq, task.attempt)

    def after_rename(self, task: BatchTask) -> None:
        self.faults.maybe_crash_worker("after_rename", task.seq, task.attempt)

    def after_plan(self) -> None:
        self.faults.maybe_kill_driver("after_plan", results_seen=1 << 62)

    def after_dispatch(self, results_seen: int) -> None:
        self.faults.maybe_kill_driver("after_dispatch", results_seen)

    def results_collected(self, results_seen: int) -> None:
        self.faults.maybe_kill_driver("after_rename", results_seen)

    def mid_commit(self, results_seen: int) -> None:
        self.faults.maybe_kill_driver("mid_commit", results_seen)

    def after_commit(self, results_seen: int) -> None:
        self.faults.maybe_kill_driver("after_commit", results_seen)


def _chance(seed: int, path: str, attempt: int) -> float:
    """Deterministic in (seed, the file's folder and name, attempt), wherever the data lives."""
    where = "/".join(path.replace(os.sep, "/").split("/")[-2:])
    digest = hashlib.sha256(f"{seed}\0{where}\0{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def load_faults_text(text: str) -> dict[str, Any]:
    """An inline TOML table body ("seed = 1, read_error_rate = 0.1") as checked fault keys."""
    try:
        table: dict[str, Any] = tomllib.loads(f"faults = {{ {text} }}")["faults"]
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(FAULTS_ENV, "", f"not an inline TOML table body ({exc})") from None
    try:
        Faults.model_validate(table)
    except ValueError as exc:
        raise ConfigError(FAULTS_ENV, "", str(exc).splitlines()[0]) from None
    return table


def load_faults(from_job: dict[str, Any] | None) -> Faults:
    """The job's [faults] table, overridden key by key by BATCHRUN_FAULTS."""
    merged = dict(from_job or {})
    text = os.environ.get(FAULTS_ENV, "").strip()
    if text:
        merged.update(load_faults_text(text))
    try:
        return Faults.model_validate(merged)
    except ValueError as exc:
        raise ConfigError(FAULTS_ENV if text else "[faults]", "", str(exc).splitlines()[0]) from None


def fault_hooks(from_job: dict[str, Any] | None) -> Hooks:
    """The run's hooks: its faults (the job's [faults] and BATCHRUN_FAULTS), or no-op
    hooks when none is asked for. Called once per run, at its start."""
    faults = load_faults(from_job)
    return FaultHooks(faults) if faults != Faults() else Hooks()
