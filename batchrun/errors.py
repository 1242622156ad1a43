"""The exception tree. Every error says which file, run, batch or key it is about.

Exceptions that cross Ray (raised in a worker) pickle with their arguments.
"""

from __future__ import annotations


class BatchrunError(Exception):
    """Root of every error batchrun raises on purpose."""


class ConfigError(BatchrunError):
    """A job file or an option is wrong; nothing was started."""

    def __init__(self, where: str, key: str, expected: str) -> None:
        super().__init__(where, key, expected)
        self.where, self.key, self.expected = where, key, expected

    def __str__(self) -> str:
        location = f"{self.where}: {self.key}" if self.key else self.where
        return f"{location}: {self.expected}"


class EnvironmentProblem(BatchrunError):
    """The machine refused: a cluster is unreachable, a directory is not writable."""


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


class SourceError(BatchrunError):
    """A source file could not be read. `transient` decides whether a retry may help."""

    transient = False

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path, self.reason = path, reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class TransientSourceError(SourceError):
    """An I/O hiccup: retrying the batch may succeed."""

    transient = True


class PermanentSourceError(SourceError):
    """The file itself is bad (corrupt, undecodable, wrong shape): it is quarantined."""
