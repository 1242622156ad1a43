"""The domain model: the records and enums every stage shares, and nothing else.

No I/O and no imports from the rest of batchrun (except `errors`), so the pure planner,
the pipeline and the catalog all speak the same types without importing each other. One
batch travels as `PlannedBatch` (planned, in the catalog) → `BatchTask` (what crosses the
worker pool) → `BatchResult` (what comes back) → `AttemptEnd` (how the scheduler closed the
attempt), and each round's changes are one `RoundRecord` written in one transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


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


@dataclass(frozen=True)
class Fingerprint:
    size: int
    mtime_ns: int | None = None
    """None in catalogs written before mtime_ns was recorded: only the size is compared."""
    sha256: str | None = None
    inode: int | None = None
    """st_ino; None in catalogs written before it was recorded: not compared."""
    device: int | None = None
    """st_dev, as the planner saw it (compared on the planner's machine only)."""

    @property
    def identity(self) -> tuple[int, int] | None:
        """(st_dev, st_ino), the file itself whatever path reaches it; None if unknown."""
        if self.device is None or self.inode is None:
            return None
        return self.device, self.inode


@dataclass(frozen=True, slots=True)
class PlannedFile:
    path: str
    size: int
    mtime: float
    source: str
    expanded: int | None = None
    """Estimated decompressed size (a gzip's trailer), for memory budgets; None: `size`."""
    mtime_ns: int | None = None
    sha256: str | None = None
    """Only with `[source] fingerprint = "sha256"`."""
    dev: int | None = None
    ino: int | None = None

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint(self.size, self.mtime_ns, self.sha256, self.ino, self.dev)

    @property
    def weight(self) -> int:
        """The bytes the file counts for in memory budgets: a gzip at its decompressed size."""
        return self.expanded or self.size


@dataclass(frozen=True)
class PlannedBatch:
    batch_id: str
    seq: int
    source: str
    files: tuple[PlannedFile, ...]

    @property
    def bytes(self) -> int:
        return sum(f.weight for f in self.files)


@dataclass(frozen=True)
class FileOutcome:
    """What a worker did with one file of its batch."""

    path: str
    rows_staged: int = 0
    rows_rejected: int = 0
    error: str | None = None
    warning: str | None = None
    checksum: str | None = None
    """The xxh3_128 of the file's bytes as read (local files; see `batchrun.manifest`)."""


@dataclass(frozen=True)
class WrittenFile:
    """A file as its writer left it: size and checksum of the bytes it wrote."""

    path: str
    size: int
    checksum: str
    """"<algorithm>:<hex digest>", see `batchrun.verify`."""


@dataclass(frozen=True)
class CommittedFile:
    """One committed output as its commit record describes it (size and checksum are
    None for files committed by a batchrun that did not record them)."""

    kind: str
    """output | rejects | unique"""
    path: str
    size: int | None
    checksum: str | None
    batch_id: str | None = None
    """None for the run's unique-key rejects."""


@dataclass(frozen=True)
class BatchResult:
    """The small object a worker returns: counts, paths and timings, never rows."""

    batch_id: str
    worker: int
    output_path: str | None
    rejects_path: str | None
    rows_staged: int
    rows_rejected: int
    bytes_read: int
    started_at: float
    finished_at: float
    files: tuple[FileOutcome, ...] = field(default_factory=tuple)
    node: str | None = None
    """The Ray node that ran the batch (its id)."""
    node_ip: str | None = None
    """That node's IP address."""
    written: tuple[WrittenFile, ...] = ()
    """Size and checksum of output_path and rejects_path."""

    def written_file(self, path: str | None) -> WrittenFile | None:
        return next((w for w in self.written if w.path == path), None)


@dataclass(frozen=True)
class Dispatch:
    batch_id: str
    attempt: int
    worker: int
    source: str
    bytes: int
    n_files: int
    at: float


@dataclass(frozen=True)
class AttemptEnd:
    batch_id: str
    attempt: int
    outcome: AttemptOutcome
    at: float
    error: str | None = None
    kind: ErrorKind | None = None
    """For failed, retried and abandoned attempts."""
    result: BatchResult | None = None


@dataclass
class RoundRecord:
    """Everything one scheduler round changed, written in one transaction."""

    dispatched: list[Dispatch] = field(default_factory=list)
    ended: list[AttemptEnd] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(batch_id, reason): batches given up without running."""

    @property
    def results(self) -> list[BatchResult]:
        return [e.result for e in self.ended if e.result is not None]

    def outcomes(self, outcome: AttemptOutcome) -> list[AttemptEnd]:
        return [e for e in self.ended if e.outcome == outcome]

    def __bool__(self) -> bool:
        return bool(self.dispatched or self.ended or self.skipped)


@dataclass(frozen=True)
class Committed:
    """What a run's staging views read: only files with a commit record."""

    outputs: list[str]
    rejects: list[str]
    """Batch rejects, plus the run's unique-key rejects when it has any."""
    unique: str | None = None
    """Rows listed here (by file and line) are unique-key duplicates: hidden from the table."""
    sizes: dict[str, int] = field(default_factory=dict)
    """The recorded size of each file that has one (older commits have none)."""
    run_id: str = ""
    storage: dict[str, Any] | None = None
    """The run's `[storage]` table, for outputs on object storage."""

    @property
    def paths(self) -> set[str]:
        return set(self.outputs) | set(self.rejects)


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    job: str
    table: str
    job_file: str
    staging_dir: str
    config: dict[str, Any]
    schema: dict[str, str] | None
    state: RunState
    pid: int | None
    host: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    message: str | None
    selection: PlanCounts | None = None
    """How its plan classified the matched files; None for runs planned before incremental
    planning existed."""


@dataclass(frozen=True)
class PlanCounts:
    """How a run's plan classified the files its source globs matched, against the
    versions the job's table serves (see `batchrun.manifest`)."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    settling: int = 0
    """Modified within `[source] settle` of the plan's start: left for the next run."""
    full_refresh: bool = False
    """Planned with --full-refresh: every file was planned, whatever its classification."""

    @property
    def nothing_new(self) -> bool:
        return not self.full_refresh and not (self.new or self.changed)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        """`nothing new: 12 files unchanged, 1 settling` or `2 new, 1 changed, 9 unchanged`."""
        settling = f", {self.settling} settling" if self.settling else ""
        if self.nothing_new:
            return f"nothing new: {self.unchanged} files unchanged{settling}"
        refresh = " (full refresh: all planned)" if self.full_refresh else ""
        return (f"{self.new} new, {self.changed} changed, {self.unchanged} unchanged"
                f"{settling}{refresh}")


@dataclass(frozen=True)
class BatchTask:
    batch_id: str
    files: tuple[str, ...]
    seq: int = 0
    attempt: int = 1
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    """Unique per dispatch, so a retried batch never writes over an earlier attempt."""
    expected: tuple[Fingerprint, ...] = ()
    """Each file's fingerprint when planned, in the order of `files` (see identity.py)."""


class AttemptOutcome(str, Enum):
    """How the scheduler closed one dispatch of a batch (the `attempts.outcome` column)."""

    COMMITTED = "committed"
    RETRIED = "retried"
    FAILED = "failed"
    ABANDONED = "abandoned"
    """Stopped while running (SIGINT/SIGTERM); the batch is left pending."""
    LOST = "lost"
    """The driver died while it ran; set by the next resume."""


class ErrorKind(str, Enum):
    """Whether a failure is worth retrying (see `errors.py`)."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"


# -- a run's status, as `status --json` and `runs --json` show it ---------------------------


@dataclass(frozen=True)
class BatchCounts:
    total: int = 0
    committed: int = 0
    failed: int = 0
    pending: int = 0
    running: int = 0
    skipped: int = 0

    def as_json(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class FileCounts:
    total: int = 0
    committed: int = 0
    failed: int = 0
    skipped: int = 0

    def as_json(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class RowCounts:
    staged: int = 0
    """Rows in the staged table (unique-key duplicates left out)."""
    rejected: int = 0
    """Rejected rows of committed files, unique-key duplicates included."""

    def as_json(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class RunCounts:
    """Batch, file and row totals of one run (`Catalog.counts`)."""

    batches: BatchCounts = BatchCounts()
    files: FileCounts = FileCounts()
    rows: RowCounts = RowCounts()
    bytes: int = 0
    """Input bytes of every planned file."""
    attempts: int = 0

    @property
    def unfinished(self) -> bool:
        """Failed, pending or skipped batches, or failed files: the run cannot succeed."""
        b = self.batches
        return bool(b.failed or b.pending or b.skipped or self.files.failed)


@dataclass(frozen=True)
class ServedFile:
    """The version of one source file that a job's table serves: the file as committed by
    the job's most recent run (in run order) that committed it. An earlier run's rows of
    the same path are superseded, never served beside it."""

    path: str
    run_id: str
    batch_id: str
    fingerprint: Fingerprint
    output_path: str | None
    rows_staged: int | None
    rows_rejected: int | None
    checksum: str | None = None
    """The xxh3_128 of the bytes its worker read (None: an object, or committed by a
    batchrun that did not record it)."""


@dataclass(frozen=True)
class FailedFile:
    path: str
    batch_id: str
    error: str | None


@dataclass(frozen=True)
class SkippedFile:
    path: str
    batch_id: str
    source: str
    reason: str | None


@dataclass(frozen=True)
class WarnedFile:
    path: str
    batch_id: str
    warning: str


@dataclass(frozen=True)
class BatchNote:
    """A failed or retried batch, as `status` lists it."""

    batch_id: str
    state: BatchState
    attempts: int
    last_error: str | None
    error_kind: ErrorKind | None
    node: str | None = None
    """Where it committed: the node's IP and the start of its Ray node id."""

    def as_json(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "state": self.state.value, "attempts": self.attempts,
                "last_error": self.last_error,
                "error_kind": self.error_kind.value if self.error_kind else None,
                "node": self.node}
