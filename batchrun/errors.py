"""The exception tree. Every error says which file, run, batch or key it is about.

Exceptions that cross Ray (raised in a worker) pickle with their arguments. Two marker
mixins (dlt's pattern) decide what the scheduler does with a failed batch: `Transient`
(a retry may help: retried with back-off) and `Terminal` (it cannot: the batch fails, or
the file is quarantined). `error_kind` is the one place that decision is made.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from batchrun.model import ErrorKind


class BatchrunError(Exception):
    """Root of every error batchrun raises on purpose."""


class Transient:
    """Marker: a retry may succeed (an I/O hiccup, a file changing while it is read)."""


class Terminal:
    """Marker: a retry cannot succeed (the input itself is bad)."""


class ConfigError(BatchrunError):
    """A job file or an option is wrong; nothing was started."""

    def __init__(self, where: str, key: str, expected: str) -> None:
        super().__init__(where, key, expected)
        self.where, self.key, self.expected = where, key, expected

    def __str__(self) -> str:
        location = f"{self.where}: {self.key}" if self.key else self.where
        return f"{location}: {self.expected}"


class EnvironmentProblem(BatchrunError):
    """The machine refused: a cluster is unreachable, a directory is not writable or full."""


class DiskFullError(EnvironmentProblem):
    """A directory batchrun writes (staging dir, state dir) is full, over quota or read-only."""

    def __init__(self, what: str, path: str, reason: str) -> None:
        super().__init__(what, path, reason)
        self.what, self.path, self.reason = what, path, reason

    def __str__(self) -> str:
        verdict = "is read-only" if "read-only" in self.reason.lower() else "is full"
        return f"{self.what} {self.path} {verdict}: {self.reason}"


class CommittedOutputError(EnvironmentProblem):
    """A committed output file is missing, truncated or unreadable: the run's table cannot
    be read as committed until `resume --repair` stages its batch again."""

    def __init__(self, path: str, problem: str, run_id: str) -> None:
        super().__init__(path, problem, run_id)
        self.path, self.problem, self.run_id = path, problem, run_id

    def __str__(self) -> str:
        run = self.run_id or "RUN"
        return (f"committed output {self.problem}: {self.path} (run batchrun verify {run}"
                f" / batchrun resume {run} --repair)")


class RunActiveError(BatchrunError):
    """Another run of the same job holds the job lock."""

    def __init__(self, job: str, run_id: str, pid: int, host: str) -> None:
        super().__init__(job, run_id, pid, host)
        self.job, self.run_id, self.pid, self.host = job, run_id, pid, host

    def __str__(self) -> str:
        return (
            f"job {self.job!r} is already running as run {self.run_id} "
            f"(pid {self.pid} on {self.host}); wait for it or stop it first"
        )


class RunNotFoundError(BatchrunError):
    """No run with that id (or no run at all) in the state dir."""


class CatalogError(BatchrunError):
    """The catalog could not be read or written."""


class StagingError(BatchrunError):
    """The staging dir could not be written or published (its views, the unique pass)."""


class SourceError(BatchrunError):
    """A source file could not be read. Its marker (`Transient`/`Terminal`) decides
    whether a retry may help."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path, self.reason = path, reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"

    @property
    def transient(self) -> bool:
        return isinstance(self, Transient)


class TransientSourceError(SourceError, Transient):
    """An I/O hiccup: retrying the batch may succeed."""


class PermanentSourceError(SourceError, Terminal):
    """The file itself is bad (corrupt, undecodable, wrong shape): it is quarantined."""


def error_kind(exc: BaseException) -> ErrorKind:
    """Whether a batch that failed with `exc` is worth retrying. The markers decide;
    an unmarked OS error or timeout is transient; anything else (a bug) is permanent."""
    if isinstance(exc, Transient):
        return ErrorKind.TRANSIENT
    if isinstance(exc, Terminal):
        return ErrorKind.PERMANENT
    if isinstance(exc, (OSError, TimeoutError)):
        return ErrorKind.TRANSIENT
    return ErrorKind.PERMANENT


_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
_FULL_TEXTS = ("no space left on device", "database or disk is full", "disk quota exceeded",
               "read-only file system")
_NEARLY_FULL = 256 * 1024
"""Free bytes below which an unexplained write error ("disk I/O error") is taken as a
full disk: SQLite reports a failed write of its WAL index that way, with no errno."""


def disk_full_reason(exc: BaseException | str, where: str | Path | None = None) -> str | None:
    """Why `exc` (an error, or its recorded text) means the disk (or quota) under `where` is
    full or read-only, or None.

    Recognises the errno (ENOSPC, EDQUOT, EROFS), the texts DuckDB, Arrow and SQLite use
    for it, and, for a bare I/O error, a file system with (almost) no free space left."""
    number = getattr(exc, "errno", None)
    if number in _FULL_ERRNOS:
        return os.strerror(number)
    text = str(exc).lower()
    for phrase in _FULL_TEXTS:
        if phrase in text:
            return "No space left on device" if "disk is full" in phrase else phrase.capitalize()
    if where is not None and ("i/o error" in text or "disk i/o" in text):
        free = _free_bytes(Path(where))
        if free is not None and free < _NEARLY_FULL:
            return "No space left on device"
    return None


def _free_bytes(path: Path) -> int | None:
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def bounded(text: str | None, limit: int = 1000) -> str | None:
    """`text` cut to `limit` characters (with an ellipsis): every message batchrun stores
    or prints about an input is bounded, however long the input made it."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"
