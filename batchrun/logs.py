"""Logging: loguru, one file per run in the state dir, run_id and batch_id on every line."""

from __future__ import annotations

from pathlib import Path

from loguru import logger

_FORMAT = ("{time:YYYY-MM-DD HH:mm:ss.SSS} | {level:<7} | run={extra[run_id]} "
           "batch={extra[batch_id]} | {message}")

logger.configure(extra={"run_id": "-", "batch_id": "-"})


def run_log_path(state_dir: Path, run_id: str) -> Path:
    return Path(state_dir) / "logs" / f"{run_id}.log"


def open_run_log(state_dir: Path, run_id: str) -> int:
    """Start appending to the run's log file; returns the sink id to close it with."""
    path = run_log_path(state_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    return logger.add(path, format=_FORMAT, level="DEBUG", enqueue=False)


def close_run_log(sink_id: int) -> None:
    logger.remove(sink_id)


def silence_default_sink() -> None:
    """Drop loguru's stderr sink: the library never prints, the CLI renders."""
    logger.remove(0) if 0 in logger._core.handlers else None  # type: ignore[attr-defined]
