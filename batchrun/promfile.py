"""A run's metrics as a Prometheus textfile, for node_exporter's textfile collector.

Written at the end of every run (succeeded, partial, failed, interrupted) to a temporary
file in the target's folder, then renamed over it: the collector never reads half a file.
One sample per metric, labelled with the job; `batchrun_last_success_timestamp_seconds`
comes from the catalog's latest succeeded run of the job, so a failed night keeps the
time of the last good one (alert on `time() - batchrun_last_success_timestamp_seconds`).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from batchrun.catalog import Catalog
from batchrun.errors import EnvironmentProblem, RunNotFoundError
from batchrun.report import run_status


@dataclass(frozen=True)
class Metric:
    name: str
    help: str
    value: float
    kind: str = "gauge"


@dataclass(frozen=True)
class RunSample:
    """What a textfile says about one run of a job."""

    job: str
    exit_code: int
    run_id: str | None = None
    state: str = "none"
    rows_staged: int = 0
    rows_rejected: int = 0
    files_total: int = 0
    files_quarantined: int = 0
    bytes_total: int = 0
    duration_s: float = 0.0
    finished_at: float = 0.0
    last_success: float | None = None


def sample_run(catalog: Catalog, job: str, run_id: str | None, exit_code: int) -> RunSample:
    """The run's counts from the catalog (the truth), or only the exit code and the last
    success when no run was recorded (e.g. the job was locked by another run)."""
    last_success = catalog.last_success_time(job)
    try:
        status = run_status(catalog, run_id) if run_id else None
    except RunNotFoundError:
        status = None
    if status is None:
        return RunSample(job, exit_code, finished_at=time.time(), last_success=last_success)
    counts = status.counts
    return RunSample(job, exit_code, run_id=status.run_id, state=status.state.value,
                     rows_staged=counts.rows.staged, rows_rejected=counts.rows.rejected,
                     files_total=counts.files.total, files_quarantined=counts.files.failed,
                     bytes_total=counts.bytes, duration_s=status.duration_s or 0.0,
                     finished_at=status.finished_at or time.time(), last_success=last_success)


def metrics(sample: RunSample) -> list[Metric]:
    metrics = [
        Metric("batchrun_rows_staged", "Rows the last run staged.", sample.rows_staged),
        Metric("batchrun_rows_rejected", "Rows the last run rejected.", sample.rows_rejected),
        Metric("batchrun_files", "Files the last run planned.", sample.files_total),
        Metric("batchrun_files_quarantined", "Files the last run quarantined.",
               sample.files_quarantined),
        Metric("batchrun_input_bytes", "Input bytes the last run planned.", sample.bytes_total),
        Metric("batchrun_run_duration_seconds", "Wall time of the last run.", sample.duration_s),
        Metric("batchrun_exit_code", "Exit code of the last run (0 ok, 1 partial, 2 usage, "
               "3 locked, 4 environment, 70 internal, 130/143 stopped).", sample.exit_code),
        Metric("batchrun_last_run_timestamp_seconds", "When the last run ended (Unix time).",
               sample.finished_at),
    ]
    if sample.last_success is not None:
        metrics.append(Metric("batchrun_last_success_timestamp_seconds",
                              "When the job's latest succeeded run ended (Unix time).",
                              sample.last_success))
    return metrics


def render(sample: RunSample) -> str:
    """The textfile's text (Prometheus text exposition format 0.0.4)."""
    job = _label(sample.job)
    lines = []
    for metric in metrics(sample):
        lines += [f"# HELP {metric.name} {metric.help}", f"# TYPE {metric.name} {metric.kind}",
                  f'{metric.name}{{job="{job}"}} {_number(metric.value)}']
    lines += ["# HELP batchrun_run_info The last run's id and state.",
              "# TYPE batchrun_run_info gauge",
              f'batchrun_run_info{{job="{job}",run_id="{_label(sample.run_id or "")}",'
              f'state="{_label(sample.state)}"}} 1']
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def write_textfile(path: Path, sample: RunSample) -> None:
    """Write atomically: a temporary file in the same folder, renamed over `path`."""
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                             dir=path.parent)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(render(sample))
        os.chmod(temporary, 0o644)  # the collector runs as another user
        os.replace(temporary, path)
    except OSError as exc:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        raise EnvironmentProblem(f"cannot write the metrics file {path}:"
                                 f" {exc.strerror or exc}") from None
