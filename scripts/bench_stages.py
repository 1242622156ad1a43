"""Where a batchrun run's wall time went, read from its own run log
(`<state-dir>/logs/<run_id>.log`, loguru text lines `time | level | run=… batch=… | message`).

Stages, each an interval of wall-clock time:

* imports: the command's spawn (timed by the bench) to the run's `started_at` (interpreter
  start, imports, the job file, the lock): no log line, the run record's time.
* Ray start: the seconds of "connected to Ray … in X s" (Ray starts while planning runs).
* planning: the seconds of a "plan… in X s" line, when batchrun writes one; without it
  (batchrun up to issue 16) planning runs hidden beside Ray's start and is not reported.
* batches: the first "dispatched" line to the last "committed:" line (timestamps).
* unique: the seconds of a "unique keys … in X s" line; without them, the last commit to
  the "unique keys" line (timestamps: this also holds the drain of the worker pool).
* publish: the seconds of a "publish… in X s" line; without them, the end of the unique
  stage to the "run <state>: … committed" line (orphan removal, `staging.duckdb`).
* exit: that last line to the command's exit (Ray's shutdown, interpreter exit).
* rest: the wall time no stage covers (actors starting, waits between stages). Stages may
  overlap (planning beside Ray's start, a first batch run while Ray starts): `rest` is the
  wall minus the union of the intervals, never a double count.

Every line is optional: a stage whose lines are missing is None, and `derived` names the
stages computed from timestamps rather than from a logged number of seconds.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

STAGES = ("imports", "planning", "ray_start", "batches", "unique", "publish", "exit", "rest")
"""The stage table's columns, in run order."""
STAGE_TITLES = {"imports": "imports", "planning": "planning", "ray_start": "Ray start",
                "batches": "batches", "unique": "unique", "publish": "publish",
                "exit": "exit", "rest": "rest"}

_SECONDS = re.compile(r"\b(?:in|took) (\d+(?:\.\d+)?) ?s\b")
_RAY = re.compile(r"^connected to Ray\b")
_PLANNING = re.compile(r"\bplan(?:ned|ning)?\b", re.IGNORECASE)
_DISPATCH = re.compile(r"^dispatched to worker\b")
_COMMIT = re.compile(r"^committed: ")
_UNIQUE = re.compile(r"^unique keys?\b")
_PUBLISH = re.compile(r"^publish", re.IGNORECASE)
_END = re.compile(r"^run \w+: .*committed")
_START = re.compile(r"^(?:starting|resuming) job\b")


@dataclass(frozen=True)
class LogLine:
    at: float
    """Seconds since the epoch (the log writes local time, to the millisecond)."""
    level: str
    message: str

    @property
    def seconds(self) -> float | None:
        """The last "in X s" / "took X s" figure of the message."""
        found = _SECONDS.findall(self.message)
        return float(found[-1]) if found else None


def parse_log(text: str) -> list[LogLine]:
    """The log's lines (text or JSON lines); a line that is neither is skipped (a
    traceback's continuation lines)."""
    lines = []
    for raw in text.splitlines():
        line = _json_line(raw) if raw.startswith("{") else _text_line(raw)
        if line is not None:
            lines.append(line)
    return lines


def _text_line(raw: str) -> LogLine | None:
    parts = raw.split(" | ", 3)
    if len(parts) < 4:
        return None
    try:
        at = datetime.strptime(parts[0].strip(), "%Y-%m-%d %H:%M:%S.%f").timestamp()
    except ValueError:
        return None
    return LogLine(at, parts[1].strip(), parts[3].strip())


def _json_line(raw: str) -> LogLine | None:
    try:
        item = json.loads(raw)
        return LogLine(datetime.fromisoformat(item["time"]).timestamp(), item.get("level", ""),
                       item.get("message", ""))
    except (ValueError, KeyError, TypeError):
        return None


def _first(lines: list[LogLine], pattern: re.Pattern[str]) -> LogLine | None:
    return next((line for line in lines if pattern.search(line.message)), None)


def _last(lines: list[LogLine], pattern: re.Pattern[str]) -> LogLine | None:
    return _first(lines[::-1], pattern)


def _logged(line: LogLine | None) -> tuple[float, float] | None:
    """The interval a line's "in X s" ends: (at − X, at)."""
    if line is None or line.seconds is None:
        return None
    return line.at - line.seconds, line.at


def stage_intervals(lines: list[LogLine], spawned_at: float, began_at: float | None,
                    exited_at: float) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """Stage → (start, end) in epoch seconds, and the stages that could have logged their
    seconds but were taken from timestamps (unique, publish). imports, batches and exit
    are always timestamps."""
    found: dict[str, tuple[float, float] | None] = {}
    derived: list[str] = []
    found["imports"] = (spawned_at, began_at) if began_at else None
    found["ray_start"] = _logged(_first(lines, _RAY))
    plan = next((x for x in lines if _PLANNING.search(x.message) and x.seconds is not None
                 and not _RAY.search(x.message)), None)
    found["planning"] = _logged(plan)
    first = _first(lines, _DISPATCH) or _first(lines, _START)
    last_commit = _last(lines, _COMMIT)
    found["batches"] = (first.at, last_commit.at) if first and last_commit else None
    timed = [x for x in lines if _UNIQUE.search(x.message) and x.seconds is not None]
    unique_line, end = (timed[-1] if timed else _last(lines, _UNIQUE)), _last(lines, _END)
    found["unique"] = _logged(unique_line)
    if found["unique"] is None and unique_line and last_commit:
        found["unique"] = (last_commit.at, unique_line.at)
        derived.append("unique")
    found["publish"] = _logged(_last(lines, _PUBLISH))
    publish_from = found["unique"][1] if found["unique"] else (last_commit.at if last_commit else None)
    if found["publish"] is None and end and publish_from is not None:
        found["publish"] = (publish_from, end.at)
        derived.append("publish")
    found["exit"] = (end.at, exited_at) if end else None
    return {k: v for k, v in found.items() if v is not None}, derived


def _union_length(intervals: Iterable[tuple[float, float]], low: float, high: float) -> float:
    total, reach = 0.0, low
    for start, end in sorted((max(low, a), min(high, b)) for a, b in intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def stage_times(lines: list[LogLine], spawned_at: float, began_at: float | None,
                exited_at: float) -> dict[str, Any]:
    """Seconds per stage (None: its lines are missing), `rest`, `wall`, and `derived`: the
    stages computed from timestamps rather than from a logged number of seconds."""
    intervals, derived = stage_intervals(lines, spawned_at, began_at, exited_at)
    wall = exited_at - spawned_at
    times: dict[str, Any] = {name: round(max(0.0, span[1] - span[0]), 3)
                             if (span := intervals.get(name)) else None
                             for name in STAGES if name != "rest"}
    times["rest"] = round(wall - _union_length(intervals.values(), spawned_at, exited_at), 3)
    times["wall"] = round(wall, 3)
    batches = intervals.get("batches")
    times["first_batch"] = round(batches[0] - spawned_at, 3) if batches else None
    times["derived"] = sorted(derived)
    return times


def stage_at(intervals: dict[str, tuple[float, float]], moment: float) -> str:
    """The stage running at `moment`: of those whose interval holds it, the one that began
    last (Ray's start over planning, a batch over Ray's start); "rest" if none."""
    holding = [(span[0], name) for name, span in intervals.items()
               if span[0] <= moment <= span[1]]
    return max(holding)[1] if holding else "rest"


def run_stage_times(state_dir: Path, run_id: str | None, spawned_at: float,
                    began_at: float | None, exited_at: float,
                    marks: dict[str, float] | None = None) -> dict[str, Any] | None:
    """`stage_times` of a run's log in `state_dir` (None without a run id or its log), and
    in `in_stage` the stage each of `marks` (name → time.time()) fell in, e.g. when the
    driver's RSS peaked."""
    if not run_id:
        return None
    try:
        text = (state_dir / "logs" / f"{run_id}.log").read_text(errors="replace")
    except OSError:
        return None
    lines = parse_log(text)
    times = stage_times(lines, spawned_at, began_at, exited_at)
    intervals, _ = stage_intervals(lines, spawned_at, began_at, exited_at)
    times["in_stage"] = {name: stage_at(intervals, moment) for name, moment in (marks or {}).items()}
    return times


def median_stages(samples: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Per stage, the median over the rounds that logged it."""
    present = [s for s in samples if s]
    if not present:
        return None
    out: dict[str, Any] = {}
    for name in (*STAGES, "wall", "first_batch"):
        values = [s[name] for s in present if s.get(name) is not None]
        out[name] = round(statistics.median(values), 3) if values else None
    out["derived"] = sorted({d for s in present for d in s.get("derived", [])})
    return out


def stage_cells(stages: dict[str, Any]) -> list[str]:
    """One table row's cells: seconds and share of the wall per stage, '–' if not logged."""
    wall = stages.get("wall") or 0.0
    first = stages.get("first_batch")
    cells = ["–" if first is None else f"{first:.2f}"]
    for name in STAGES:
        value = stages.get(name)
        if value is None:
            cells.append("–")
        else:
            share = f" ({100 * value / wall:.0f}%)" if wall else ""
            cells.append(f"{value:.2f}{share}")
    return cells
