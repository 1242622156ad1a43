"""Logging: loguru, one file per run in the state dir, run_id and batch_id on every line.

The run log is private (0600, in a 0700 dir) and its lines pass through `redact`: a
message or a traceback that quotes a cluster address never writes its password. Loguru's
`diagnose` (values of local variables in tracebacks) is off for the same reason.
A line that cannot be written (the state dir is full) is dropped, never printed.
"""

from __future__ import annotations

import contextlib
import traceback
from pathlib import Path
from typing import Any

from loguru import logger

from batchrun.errors import DiskFullError, EnvironmentProblem, disk_full_reason
from batchrun.private import private_dir, private_file
from batchrun.redact import redact

_FORMAT = ("{time:YYYY-MM-DD HH:mm:ss.SSS} | {level:<7} | run={extra[run_id]} "
           "batch={extra[batch_id]} | {extra[_redacted]}\n")

logger.configure(extra={"run_id": "-", "batch_id": "-"})


def run_log_path(state_dir: Path, run_id: str) -> Path:
    return Path(state_dir) / "logs" / f"{run_id}.log"


class _RunLogFile:
    """The run log's sink. A line that cannot be written (the state dir is full) is dropped:
    loguru's own file sink would print a traceback to stderr instead, and the catalog
    reports the full disk as one line anyway."""

    def __init__(self, path: Path) -> None:
        private_file(private_dir(private_dir(path.parent.parent) / path.parent.name) / path.name)
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by stop()

    def write(self, message: str) -> None:
        try:
            self._handle.write(message if message.endswith("\n") else message + "\n")
            self._handle.flush()
        except OSError:
            pass

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._handle.close()


def open_run_log(state_dir: Path, run_id: str) -> int:
    """Start appending to the run's log file; returns the sink id to close it with."""
    path = run_log_path(state_dir, run_id)
    try:
        sink = _RunLogFile(path)
    except OSError as exc:
        reason = disk_full_reason(exc, path.parent)
        if reason:
            raise DiskFullError("state dir", str(state_dir), reason) from None
        raise EnvironmentProblem(f"cannot write the run log {path}: {exc.strerror or exc}") from None
    return logger.add(sink, format=_redacted_format, level="DEBUG", enqueue=False, catch=False,
                      backtrace=False, diagnose=False)


def _redacted_format(record: Any) -> str:
    """The line's template; the message (and traceback) it shows are redacted copies."""
    text = record["message"]
    exception = record["exception"]
    if exception is not None:
        text += "\n" + "".join(traceback.format_exception(
            exception.type, exception.value, exception.traceback)).rstrip("\n")
    record["extra"]["_redacted"] = redact(text)
    return _FORMAT


def close_run_log(sink_id: int) -> None:
    logger.remove(sink_id)


def silence_default_sink() -> None:
    """Drop loguru's stderr sink: the library never prints, the CLI renders."""
    logger.remove(0) if 0 in logger._core.handlers else None  # type: ignore[attr-defined]
