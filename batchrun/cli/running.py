"""Around a run command's library call (run, resume, retry-failed): the progress display
and the run log's format chosen from the output options, and the metrics textfile
written however the command ends."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchrun import logs
from batchrun.catalog import Catalog
from batchrun.cli.exits import exit_code_for
from batchrun.cli.options import err, invocation, run_output
from batchrun.cli.progress import ProgressView, progress_view
from batchrun.errors import BatchrunError
from batchrun.model import BatchState

if TYPE_CHECKING:
    from batchrun.execution.scheduler import ProgressCallback


@contextlib.contextmanager
def run_display(opening: str, as_json: bool) -> Iterator[ProgressView]:
    """The run's display on stderr (see progress.py); `--json` shows none of it."""
    output = run_output()
    logs.use_format(output.log_format)
    view = progress_view(err, opening, show=output.progress, quiet=output.quiet or as_json,
                         interval=output.interval)
    with view:
        yield view


def noting_run_id(view: ProgressView) -> ProgressCallback:
    """The display's progress callback that also keeps the run id once the plan is recorded
    (while Ray may still be starting), so that a Ctrl-C then can name the run to resume."""
    def on_progress(event: dict[str, Any]) -> None:
        if event.get("stage") == "planned":
            invocation["run_id"] = event["run_id"]
        view(event)
    return on_progress


def log_note(view: ProgressView, state_dir: Path, run_id: str) -> None:
    view.note(f"log: {logs.run_log_path(state_dir, run_id)}")


def resume_totals(catalog: Catalog, run_id: str) -> dict[str, object]:
    """A resumed run's totals and what is done already, as a "planned" progress event."""
    counts = catalog.counts(run_id)
    done_bytes = sum(b["bytes"] or 0 for b in catalog.batches(run_id, BatchState.COMMITTED))
    return {"stage": "planned", "run_id": run_id, "files": counts.files.total,
            "bytes": counts.bytes, "batches": counts.batches.total,
            "files_done": counts.files.committed + counts.files.failed,
            "bytes_done": done_bytes, "batches_done": counts.batches.committed,
            "rows_done": counts.rows.staged, "rejected_done": counts.rows.rejected,
            "quarantined_done": counts.files.failed}


@contextlib.contextmanager
def metrics_on_exit(catalog: Catalog, job: str | None = None) -> Iterator[None]:
    """With --metrics-file: write the run's textfile however the command ends (its exit
    code, a library error, Ctrl-C). A textfile that cannot be written is one error line;
    the run's own exit code stands."""
    path = run_output().metrics_file
    if path is None:
        yield
        return
    try:
        yield
    except BaseException as exc:
        _write_metrics(path, catalog, job, exit_code_for(exc))
        raise
    _write_metrics(path, catalog, job, 0)


def _write_metrics(path: Path, catalog: Catalog, job: str | None, code: int) -> None:
    from batchrun.promfile import sample_run, write_textfile

    run_id = invocation.get("run_id")
    try:
        job = job or (catalog.run(run_id).job if run_id else None)
        if job is None:
            return
        write_textfile(path, sample_run(catalog, job, run_id, code))
    except BatchrunError as exc:
        err.print(f"error: {exc}", markup=False)
