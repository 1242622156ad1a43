"""Logging: loguru, one file per run in the state dir, run_id, batch_id and file bound to
every line (`-` where none applies; the text format shows the file only where one is).
The run log is text, or JSON lines for log shippers (`use_format("json")`: one object a
line with time, level, run_id, batch_id, file, message and, after an error, exception).

The run log is private (0600, in a 0700 dir) and its lines pass through `redact`: a
message or a traceback that quotes a cluster address never writes its password. Loguru's
`diagnose` (values of local variables in tracebacks) is off for the same reason.
A line that cannot be written (the state dir is full) is dropped, never printed.
"""

from __future__ import annotations

import contextlib
import json
import traceback
from pathlib import Path
from typing import Any

from loguru import logger

from batchrun.errors import DiskFullError, EnvironmentProblem, disk_full_reason
from batchrun.private import private_dir, private_file
from batchrun.redact import redact

_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level:<7} | {extra[_where]} | {extra[_redacted]}\n"
_JSON_FORMAT = "{extra[_json]}\n"
FORMATS = ("text", "json")

logger.configure(extra={"run_id": "-", "batch_id": "-", "file": "-"})
_chosen: dict[str, str | None] = {"format": None}


def use_format(name: str | None) -> None:
    """The format of the run logs opened from now on: "text" or "json" (the CLI's
    --log-format); None: the format a run's log already has (a resume goes on as its run
    began), else text."""
    if name is not None and name not in FORMATS:
        raise ValueError(f"log format {name!r}: expected one of {', '.join(FORMATS)}")
    _chosen["format"] = name


def _format_of(path: Path) -> str:
    chosen = _chosen["format"]
    if chosen is not None:
        return chosen
    try:
        with path.open("rb") as handle:
            return "json" if handle.read(1) == b"{" else "text"
    except OSError:
        return "text"


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
    chosen = _json_format if _format_of(path) == "json" else _redacted_format
    try:
        sink = _RunLogFile(path)
    except OSError as exc:
        reason = disk_full_reason(exc, path.parent)
        if reason:
            raise DiskFullError("state dir", str(state_dir), reason) from None
        raise EnvironmentProblem(f"cannot write the run log {path}: {exc.strerror or exc}") from None
    return logger.add(sink, format=chosen, level="DEBUG", enqueue=False, catch=False,
                      backtrace=False, diagnose=False)


def _redacted_format(record: Any) -> str:
    """The line's template; the message (and traceback) it shows are redacted copies."""
    extra = record["extra"]
    text = record["message"] + _traceback_text(record)
    extra["_redacted"] = redact(text)
    where = f"run={extra.get('run_id', '-')} batch={extra.get('batch_id', '-')}"
    file = extra.get("file", "-")
    extra["_where"] = where if file == "-" else f"{where} file={redact(str(file))}"
    return _FORMAT


def _json_format(record: Any) -> str:
    """One JSON object a line, redacted as the text format is."""
    extra = record["extra"]
    line = {"time": record["time"].isoformat(), "level": record["level"].name,
            "run_id": extra.get("run_id", "-"), "batch_id": extra.get("batch_id", "-"),
            "file": redact(str(extra.get("file", "-"))), "message": redact(record["message"])}
    trace = _traceback_text(record)
    if trace:
        line["exception"] = redact(trace.lstrip("\n"))
    extra["_json"] = json.dumps(line, default=str)
    return _JSON_FORMAT


def _traceback_text(record: Any) -> str:
    exception = record["exception"]
    if exception is None:
        return ""
    return "\n" + "".join(traceback.format_exception(
        exception.type, exception.value, exception.traceback)).rstrip("\n")


def close_run_log(sink_id: int) -> None:
    logger.remove(sink_id)


def silence_default_sink() -> None:
    """Drop loguru's stderr sink: the library never prints, the CLI renders."""
    logger.remove(0) if 0 in logger._core.handlers else None  # type: ignore[attr-defined]
